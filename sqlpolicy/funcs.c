/*
 * What the engine knows about functions.
 *
 * A function is "known" when it is a PostgreSQL 15 built-in (pg_catalog), so
 * its result derives from its arguments only; everything else - user
 * functions, extension functions - has unknown lineage (it may read any table)
 * and is refused unless the role lists it in functions_allow.  On top of the
 * built-ins, a short table names those that are administrative (files, large
 * objects, server control), that run SQL given as text or read a whole table
 * by name (their lineage cannot be known), or that return other sessions'
 * statement text.  (pg_sleep is an ordinary built-in: a timing oracle needs a
 * condition on a raw PHI value, and output expressions only ever see masked
 * ones while predicates follow the role's rules.)  The list is fixed at build time on purpose: a function a
 * later server version adds is unknown until someone looks at it.
 */
#include <stdlib.h>
#include <string.h>

#include "sqlpolicy/sp_internal.h"

typedef struct builtin_fn {
    const char *name;
    const char *kinds;
} builtin_fn;

static const builtin_fn builtins[] = {
#include "sqlpolicy/funcs_pg15.inc"
};

typedef struct special_fn {
    const char *name;     /* exact name, or a prefix when it ends in '*' */
    sp_func_kind kind;
    const char *why;
} special_fn;

static const special_fn specials[] = {
    {"pg_read_file", SPF_ADMIN, "reads a server file"},
    {"pg_read_file_old", SPF_ADMIN, "reads a server file"},
    {"pg_read_binary_file", SPF_ADMIN, "reads a server file"},
    {"pg_stat_file", SPF_ADMIN, "reads server file metadata"},
    {"pg_ls_*", SPF_ADMIN, "lists a server directory"},
    {"pg_file_*", SPF_ADMIN, "writes a server file"},
    {"pg_logdir_ls", SPF_ADMIN, "lists a server directory"},
    {"pg_current_logfile", SPF_ADMIN, "names a server log file"},
    {"lo_*", SPF_ADMIN, "large objects are not analysable"},
    {"loread", SPF_ADMIN, "large objects are not analysable"},
    {"lowrite", SPF_ADMIN, "large objects are not analysable"},
    {"dblink*", SPF_ADMIN, "dblink reaches another database"},
    {"pg_reload_conf", SPF_ADMIN, "server control"},
    {"pg_rotate_logfile*", SPF_ADMIN, "server control"},
    {"pg_terminate_backend", SPF_ADMIN, "server control"},
    {"pg_cancel_backend", SPF_ADMIN, "server control"},
    {"pg_promote", SPF_ADMIN, "server control"},
    {"pg_switch_wal", SPF_ADMIN, "server control"},
    {"pg_backup_*", SPF_ADMIN, "server control"},
    {"pg_create_*", SPF_ADMIN, "replication / recovery control"},
    {"pg_drop_replication_slot", SPF_ADMIN, "replication control"},
    {"pg_copy_*_replication_slot", SPF_ADMIN, "replication control"},
    {"pg_replication_slot_advance", SPF_ADMIN, "replication control"},
    {"pg_replication_origin_*", SPF_ADMIN, "replication control"},
    {"pg_logical_*", SPF_ADMIN, "logical decoding returns changed rows"},
    {"pg_wal_replay_*", SPF_ADMIN, "server control"},
    {"pg_export_snapshot", SPF_ADMIN, "server control"},
    {"pg_import_system_collations", SPF_ADMIN, "server control"},
    {"pg_log_backend_memory_contexts", SPF_ADMIN, "server control"},
    {"pg_stat_reset*", SPF_ADMIN, "server control"},
    {"pg_stop_making_pinned_objects", SPF_ADMIN, "server control"},
    {"binary_upgrade_*", SPF_ADMIN, "server control"},
    {"brin_summarize*", SPF_ADMIN, "index maintenance"},
    {"brin_desummarize_range", SPF_ADMIN, "index maintenance"},
    {"gin_clean_pending_list", SPF_ADMIN, "index maintenance"},
    {"pg_hba_file_rules", SPF_ADMIN, "server configuration files"},
    {"pg_ident_file_mappings", SPF_ADMIN, "server configuration files"},
    {"pg_show_all_file_settings", SPF_ADMIN, "server configuration files"},
    {"pg_stat_statements_reset", SPF_ADMIN, "server control"},
    {"query_to_xml*", SPF_SQL_TEXT, "runs SQL given as text"},
    {"cursor_to_xml*", SPF_SQL_TEXT, "reads a cursor the engine did not analyse"},
    {"table_to_xml*", SPF_SQL_TEXT, "reads a whole table by name"},
    {"schema_to_xml*", SPF_SQL_TEXT, "reads whole tables by name"},
    {"database_to_xml*", SPF_SQL_TEXT, "reads whole tables by name"},
    {"ts_stat", SPF_SQL_TEXT, "runs SQL given as text"},
    {"ts_rewrite", SPF_SQL_TEXT, "may run SQL given as text"},
    {"pg_stat_get_activity", SPF_ACTIVITY, "returns other sessions' statement text"},
    {"pg_stat_get_backend_activity", SPF_ACTIVITY, "returns other sessions' statement text"},
    {"pg_stat_statements", SPF_ACTIVITY, "returns other sessions' statement text"},
    {"set_config", SPF_SET_CONFIG, NULL},
};

static bool special_match(const char *pat, const char *name)
{
    size_t n = strlen(pat);
    if (n && pat[n - 1] == '*') {
        const char *star = strchr(pat, '*');
        if (star != pat + n - 1) {
            /* one inner '*': prefix and suffix */
            size_t pre = (size_t)(star - pat), suf = n - pre - 1;
            size_t ln = strlen(name);
            return ln >= pre + suf && strncmp(name, pat, pre) == 0 && strcmp(name + ln - suf, star + 1) == 0;
        }
        return strncmp(pat, name, n - 1) == 0;
    }
    const char *star = strchr(pat, '*');
    if (star) {
        size_t pre = (size_t)(star - pat), suf = n - pre - 1, ln = strlen(name);
        return ln >= pre + suf && strncmp(name, pat, pre) == 0 && strcmp(name + ln - suf, star + 1) == 0;
    }
    return strcmp(pat, name) == 0;
}

static const special_fn *special_of(const char *name)
{
    for (size_t i = 0; i < SP_ARRAY_LEN(specials); i++)
        if (special_match(specials[i].name, name))
            return &specials[i];
    return NULL;
}

static int cmp_builtin(const void *k, const void *e)
{
    return strcmp((const char *)k, ((const builtin_fn *)e)->name);
}

sp_func_kind sp_func_lookup(const char *schema, const char *name)
{
    if (!name)
        return SPF_UNKNOWN;
    const special_fn *sp = special_of(name);
    if (sp)
        return sp->kind;
    /* a schema other than pg_catalog names a user function even when a
     * built-in of the same name exists */
    if (schema && strcmp(schema, "pg_catalog") != 0)
        return SPF_UNKNOWN;
    const builtin_fn *b = bsearch(name, builtins, SP_ARRAY_LEN(builtins), sizeof builtins[0], cmp_builtin);
    if (!b)
        return SPF_UNKNOWN;
    return strchr(b->kinds, 'a') ? SPF_AGGREGATE : SPF_SAFE;
}

const char *sp_func_why(const char *name)
{
    const special_fn *sp = name ? special_of(name) : NULL;
    return sp && sp->why ? sp->why : "unknown function";
}

const char *const *sp_srf_columns(const char *name)
{
    static const char *const key_value[] = {"key", "value", NULL};
    static const char *const value[] = {"value", NULL};
    static const char *const options[] = {"option_name", "option_value", NULL};
    static const char *const keywords[] = {"word", "catcode", "barelabel", "catdesc", "baredesc", NULL};
    static const struct {
        const char *fn;
        const char *const *cols;
    } srfs[] = {
        {"json_each", key_value},           {"jsonb_each", key_value},
        {"json_each_text", key_value},      {"jsonb_each_text", key_value},
        {"json_array_elements", value},     {"jsonb_array_elements", value},
        {"json_array_elements_text", value}, {"jsonb_array_elements_text", value},
        {"pg_options_to_table", options},   {"pg_get_keywords", keywords},
    };
    for (size_t i = 0; i < SP_ARRAY_LEN(srfs); i++)
        if (strcmp(srfs[i].fn, name) == 0)
            return srfs[i].cols;
    return NULL;
}

/* Built-ins returning a record whose columns the engine does not model: a
 * FROM-clause use of them has unknown column names. */
bool sp_func_returns_record(const char *name)
{
    static const char *const recs[] = {"json_to_record", "jsonb_to_record", "json_to_recordset",
                                       "jsonb_to_recordset", "json_populate_record", "jsonb_populate_record",
                                       "json_populate_recordset", "jsonb_populate_recordset", "unnest",
                                       "pg_control_system", "pg_control_checkpoint", "pg_control_recovery",
                                       "pg_control_init", "pg_timezone_names", "pg_timezone_abbrevs",
                                       "pg_get_object_address", "pg_identify_object", "pg_sequence_parameters",
                                       "ts_debug", "ts_parse", "ts_token_type", "regexp_matches",
                                       "pg_partition_tree", "pg_event_trigger_ddl_commands",
                                       "pg_event_trigger_dropped_objects", "pg_get_catalog_foreign_keys",
                                       "pg_walfile_name_offset", "aclexplode", "pg_input_error_info", NULL};
    for (int i = 0; recs[i]; i++)
        if (strcmp(recs[i], name) == 0)
            return true;
    return false;
}

/* ---- MySQL / MariaDB ------------------------------------------------------- */

static const builtin_fn mysql_builtins[] = {
#include "sqlpolicy/funcs_mysql.inc"
};

sp_func_kind sp_func_lookup_mysql(const char *schema, const char *name)
{
    if (!name || schema) /* db.func() is a stored function: unknown lineage */
        return SPF_UNKNOWN;
    const builtin_fn *b = bsearch(name, mysql_builtins, SP_ARRAY_LEN(mysql_builtins), sizeof mysql_builtins[0],
                                  cmp_builtin);
    if (!b)
        return SPF_UNKNOWN;
    if (strchr(b->kinds, 'A'))
        return SPF_ADMIN;
    return strchr(b->kinds, 'a') ? SPF_AGGREGATE : SPF_SAFE;
}

const char *sp_func_why_mysql(const char *name)
{
    if (name && strcmp(name, "load_file") == 0)
        return "reads a server file";
    return "controls replication";
}
