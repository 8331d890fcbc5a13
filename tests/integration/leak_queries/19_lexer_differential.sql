# Parser differentials: session settings that make the server lex a statement
# differently from a parser that assumes standard_conforming_strings = on and UTF-8.
# Under standard_conforming_strings = off the server reads '\' as an escaped quote:
#   select '\', ' , ssn from patients limit 3 --' from wards limit 1
# is two literals from wards for a UTF-8/scs=on parser, and "select '..', ssn from
# patients limit 3" for the server.  A client encoding whose second byte can be 0x5c
# ('表' in SJIS, '許' in BIG5, '乗' in GBK) does the same to E'' strings.
set standard_conforming_strings = off ;; select '\', ' , ssn from patients limit 3 --' from wards limit 1
set standard_conforming_strings to off ;; select '\', ' , first_name, email from patients limit 3 --' as x
set session standard_conforming_strings = 'off' ;; select '\', ' , ssn from patients limit 3 --' from wards limit 1
select set_config('standard_conforming_strings', 'off', false) ;; select '\', ' , ssn from patients limit 3 --' from wards limit 1
select set_config('standard_conforming_strings', 'off', false) from wards limit 1 ;; select '\', ' , ssn from patients limit 3 --' from wards limit 1
set standard_conforming_strings = off; select '\', ' , ssn from patients limit 3 --' from wards limit 1
set local standard_conforming_strings = off ;; select '\', ' , ssn from patients limit 3 --' from wards limit 1
reset all ;; set standard_conforming_strings = off ;; select '\', ' , notes from encounters limit 3 --' as x
{"conn": {"options": "-c standard_conforming_strings=off"}} select '\', ' , ssn from patients limit 3 --' from wards limit 1
set backslash_quote = on ;; set standard_conforming_strings = off ;; select '\', ' , ssn from patients limit 3 --' from wards limit 1
set standard_conforming_strings = off ;; select E'\'' as a, '\', ' , ssn from patients limit 3 --' as b
set client_encoding = 'SJIS' ;; select E'表' , ssn from patients limit 3 -- ' as x
set client_encoding = 'BIG5' ;; select E'許' , ssn from patients limit 3 -- ' as x
set client_encoding = 'GBK' ;; select E'乗' , ssn from patients limit 3 -- ' as x
set names 'SJIS' ;; select E'表' , first_name from patients limit 3 -- ' as x
select set_config('client_encoding', 'SJIS', false) ;; select E'表' , ssn from patients limit 3 -- ' as x
{"conn": {"client_encoding": "SJIS"}} select E'表' , ssn from patients limit 3 -- ' as x
{"conn": {"options": "-c client_encoding=BIG5"}} select E'許' , ssn from patients limit 3 -- ' as x
set client_encoding = 'SJIS' ;; select E'表' , ssn from patients where id = 1 -- ' as x
set client_encoding = 'SJIS' ;; select '表' || ssn from patients limit 3
set standard_conforming_strings = off ;; select 'x' || ssn from patients limit 3
set standard_conforming_strings = off ;; prepare lx as select '\', ' , ssn from patients limit 3 --' from wards limit 1 ;; execute lx
set standard_conforming_strings = off ;; declare lc cursor for select '\', ' , ssn from patients limit 3 --' from wards limit 1 ;; fetch all from lc
{"conn": {"client_encoding": "SJIS"}} select E'表' , ssn || '' from patients limit 3 -- ' as x
{"conn": {"client_encoding": "BIG5"}} select E'許' , upper(first_name), row_to_json(patients) from patients limit 3 -- ' as x
{"conn": {"client_encoding": "GBK"}} select E'乗' , notes || '' from encounters limit 3 -- ' as x
{"conn": {"options": "-c client_encoding=SJIS"}} select E'表' , ssn || '' from patients limit 3 -- ' as x
{"conn": {"client_encoding": "GB18030"}} select E'乗' , email || '' from patients limit 3 -- ' as x
{"conn": {"client_encoding": "SHIFT_JIS_2004"}} select E'表' , ssn || '' from patients limit 3 -- ' as x
{"conn": {"client_encoding": "SJIS"}} select E'表' , ssn from patients where id = 1 -- ' as x
