/*
 * The Lua scripts behind gate/approvals.c.  Each state change of a request is
 * one script, run atomically by Redis (EVALSHA), so racing approvers, a waiter
 * claiming its grant and an agent withdrawing cannot interleave.
 *
 * Every script takes ARGV[1] = the key prefix and builds its keys from it
 * (single-node Redis; see gate/APPROVALS.md).  Times come from Redis's own
 * clock (TIME), so several phigate instances agree on expiry.  Scripts return
 * arrays of strings only: numbers are formatted here, parsed and bounds-
 * checked in C.
 */
#ifndef PHIGATE_APPROVALS_LUA_H
#define PHIGATE_APPROVALS_LUA_H

/* Shared helpers, prepended to every script. */
#define APPROVALS_LUA_PRELUDE                                                                                      \
    "local function fmt(n) return string.format('%.0f', n) end\n"                                                  \
    "local function now_ms()\n"                                                                                    \
    "  local t = redis.call('TIME')\n"                                                                             \
    "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                                         \
    "end\n"                                                                                                        \
    "local function tohash(flat)\n"                                                                                \
    "  local h = {}\n"                                                                                             \
    "  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end\n"                                                      \
    "  return h\n"                                                                                                 \
    "end\n"                                                                                                        \
    "local function hash(key)\n"                                                                                   \
    "  local flat = redis.call('HGETALL', key)\n"                                                                  \
    "  if #flat == 0 then return nil end\n"                                                                        \
    "  return tohash(flat)\n"                                                                                      \
    "end\n"                                                                                                        \
    "local function grant_key(p, identity, fp)\n"                                                                  \
    "  return p .. 'grant:' .. redis.sha1hex(identity .. '\\0' .. fp)\n"                                           \
    "end\n"                                                                                                        \
    "local function expire_request(p, id, rk, now)\n"                                                              \
    "  redis.call('HSET', rk, 'status', 'expired', 'waiting', '0', 'decided_at', fmt(now))\n"                      \
    "  redis.call('ZREM', p .. 'pending', id)\n"                                                                   \
    "  redis.call('PUBLISH', p .. 'events', 'expired ' .. id)\n"                                                   \
    "end\n"

/* Keep a request hash this long after it stops being approvable: long enough
 * for `phigatectl approvals show`, short enough not to hoard statements. */
#define APPROVALS_RETAIN_MS "86400000"

/*
 * BEGIN: use a grant, or create the request.
 * ARGV: prefix id identity fingerprint client_addr database protocol statement
 *       reason rule request_ttl_ms instance
 * ->    {"granted", request_id, approver, reason, row_cap}
 *     | {"pending", created_ms, expires_ms} | {"collision"}
 */
#define APPROVALS_LUA_BEGIN                                                                                        \
    APPROVALS_LUA_PRELUDE                                                                                          \
    "local p, id, who, fp = ARGV[1], ARGV[2], ARGV[3], ARGV[4]\n"                                                  \
    "local now = now_ms()\n"                                                                                       \
    "local gk = grant_key(p, who, fp)\n"                                                                           \
    "local g = hash(gk)\n"                                                                                         \
    "if g and g.identity == who and g.fingerprint == fp and tonumber(g.expires or '0') > now then\n"               \
    "  if g.mode ~= 'ttl' then redis.call('DEL', gk) end\n"                                                        \
    "  local used = p .. 'req:' .. (g.request_id or '')\n"                                                         \
    "  if redis.call('EXISTS', used) == 1 then redis.call('HINCRBY', used, 'uses', 1) end\n"                       \
    "  return {'granted', g.request_id or '', g.approver or '', g.reason or '', g.row_cap or '0'}\n"               \
    "end\n"                                                                                                        \
    "local rk = p .. 'req:' .. id\n"                                                                               \
    "if redis.call('EXISTS', rk) == 1 then return {'collision'} end\n"                                             \
    "local expires = now + tonumber(ARGV[11])\n"                                                                   \
    "redis.call('HSET', rk, 'id', id, 'identity', who, 'fingerprint', fp, 'client_addr', ARGV[5],\n"               \
    "  'database', ARGV[6], 'protocol', ARGV[7], 'statement', ARGV[8], 'reason', ARGV[9], 'rule', ARGV[10],\n"     \
    "  'instance', ARGV[12], 'status', 'pending', 'created', fmt(now), 'expires', fmt(expires), 'waiting', '1')\n"  \
    "redis.call('PEXPIREAT', rk, fmt(expires + " APPROVALS_RETAIN_MS "))\n"                                        \
    "redis.call('ZADD', p .. 'pending', fmt(now), id)\n"                                                           \
    "redis.call('PUBLISH', p .. 'events', 'new ' .. id)\n"                                                         \
    "return {'pending', fmt(now), fmt(expires)}\n"

/*
 * CLAIM: a waiter reads its request; on approval it takes the grant the
 * decision created (deleting it when single-use).
 * ARGV: prefix id
 * ->    {"pending"} | {"approved", approver, reason, row_cap} | {"denied", approver, reason}
 *     | {"used", approver} | {"expired"} | {"withdrawn"} | {"gone"} | {status}
 */
#define APPROVALS_LUA_CLAIM                                                                                        \
    APPROVALS_LUA_PRELUDE                                                                                          \
    "local p, id = ARGV[1], ARGV[2]\n"                                                                             \
    "local rk = p .. 'req:' .. id\n"                                                                               \
    "local r = hash(rk)\n"                                                                                         \
    "if not r then return {'gone'} end\n"                                                                          \
    "if r.status == 'pending' then\n"                                                                              \
    "  local now = now_ms()\n"                                                                                     \
    "  if tonumber(r.expires or '0') <= now then expire_request(p, id, rk, now) return {'expired'} end\n"          \
    "  return {'pending'}\n"                                                                                       \
    "end\n"                                                                                                        \
    "if r.status == 'denied' then return {'denied', r.decided_by or '', r.decision_reason or ''} end\n"            \
    "if r.status == 'approved' then\n"                                                                             \
    "  if r.claimed == '1' then return {'used', r.decided_by or ''} end\n"                                         \
    "  local gk = grant_key(p, r.identity or '', r.fingerprint or '')\n"                                           \
    "  local g = hash(gk)\n"                                                                                       \
    "  if g and g.request_id == id then\n"                                                                         \
    "    if g.mode ~= 'ttl' then redis.call('DEL', gk) end\n"                                                      \
    "    redis.call('HSET', rk, 'claimed', '1', 'waiting', '0')\n"                                                 \
    "    redis.call('HINCRBY', rk, 'uses', 1)\n"                                                                   \
    "    return {'approved', r.decided_by or '', r.decision_reason or '', r.row_cap or '0'}\n"                     \
    "  end\n"                                                                                                      \
    "  return {'used', r.decided_by or ''}\n"                                                                      \
    "end\n"                                                                                                        \
    "return {r.status or 'unknown'}\n"

/*
 * DECIDE: approve or deny a pending request, once.
 * ARGV: prefix id approver approve|deny reason grant_mode grant_ttl_ms row_cap
 * ->    {"ok", status} | {"not_found"} | {"not_pending", status, decided_by}
 *     | {"expired"} | {"self"}
 */
#define APPROVALS_LUA_DECIDE                                                                                       \
    APPROVALS_LUA_PRELUDE                                                                                          \
    "local p, id, by = ARGV[1], ARGV[2], ARGV[3]\n"                                                                \
    "local rk = p .. 'req:' .. id\n"                                                                               \
    "local r = hash(rk)\n"                                                                                         \
    "if not r then return {'not_found'} end\n"                                                                     \
    "if r.status ~= 'pending' then return {'not_pending', r.status or '', r.decided_by or ''} end\n"               \
    "local now = now_ms()\n"                                                                                       \
    "if tonumber(r.expires or '0') <= now then expire_request(p, id, rk, now) return {'expired'} end\n"            \
    "if r.identity == by then return {'self'} end\n"                                                               \
    "local st = 'denied'\n"                                                                                        \
    "if ARGV[4] == 'approve' then st = 'approved' end\n"                                                           \
    "redis.call('HSET', rk, 'status', st, 'decided_by', by, 'decided_at', fmt(now), 'decision_reason', ARGV[5],\n" \
    "  'row_cap', ARGV[8])\n"                                                                                      \
    "redis.call('ZREM', p .. 'pending', id)\n"                                                                     \
    "if st == 'approved' then\n"                                                                                   \
    "  local gk = grant_key(p, r.identity or '', r.fingerprint or '')\n"                                           \
    "  local gexp = now + tonumber(ARGV[7])\n"                                                                     \
    "  redis.call('DEL', gk)\n"                                                                                    \
    "  redis.call('HSET', gk, 'request_id', id, 'identity', r.identity or '', 'fingerprint', r.fingerprint or '',\n" \
    "    'approver', by, 'reason', ARGV[5], 'row_cap', ARGV[8], 'mode', ARGV[6], 'expires', fmt(gexp))\n"          \
    "  redis.call('PEXPIREAT', gk, fmt(gexp))\n"                                                                   \
    "  redis.call('HSET', rk, 'grant_mode', ARGV[6], 'grant_expires', fmt(gexp))\n"                                \
    "end\n"                                                                                                        \
    "redis.call('PUBLISH', p .. 'events', 'decided ' .. id)\n"                                                     \
    "return {'ok', st}\n"

/* WITHDRAW: the agent gave up.  ARGV: prefix id  -> status after the call */
#define APPROVALS_LUA_WITHDRAW                                                                                     \
    APPROVALS_LUA_PRELUDE                                                                                          \
    "local p, id = ARGV[1], ARGV[2]\n"                                                                             \
    "local rk = p .. 'req:' .. id\n"                                                                               \
    "local r = hash(rk)\n"                                                                                         \
    "if not r then return 'gone' end\n"                                                                            \
    "if r.status ~= 'pending' then return r.status or 'unknown' end\n"                                             \
    "redis.call('HSET', rk, 'status', 'withdrawn', 'waiting', '0', 'decided_at', fmt(now_ms()))\n"                 \
    "redis.call('ZREM', p .. 'pending', id)\n"                                                                     \
    "redis.call('PUBLISH', p .. 'events', 'withdrawn ' .. id)\n"                                                   \
    "return 'withdrawn'\n"

/* STOPPED_WAITING: the waiter timed out; the request stays approvable.  ARGV: prefix id */
#define APPROVALS_LUA_STOPPED_WAITING                                                                              \
    "local rk = ARGV[1] .. 'req:' .. ARGV[2]\n"                                                                    \
    "if redis.call('HGET', rk, 'status') == 'pending' then redis.call('HSET', rk, 'waiting', '0') end\n"           \
    "return 'ok'\n"

/* LIST: pending requests oldest first, repairing the index on the way; stops
 * once the statements add up to the byte budget (at least one is returned).
 * ARGV: prefix limit budget  -> {now_ms, {field, value, ...}, ...} */
#define APPROVALS_LUA_LIST                                                                                         \
    APPROVALS_LUA_PRELUDE                                                                                          \
    "local p = ARGV[1]\n"                                                                                          \
    "local now = now_ms()\n"                                                                                       \
    "local ids = redis.call('ZRANGE', p .. 'pending', 0, tonumber(ARGV[2]) - 1)\n"                                 \
    "local out, bytes = {fmt(now)}, 0\n"                                                                           \
    "for _, id in ipairs(ids) do\n"                                                                                \
    "  local rk = p .. 'req:' .. id\n"                                                                             \
    "  local flat = redis.call('HGETALL', rk)\n"                                                                   \
    "  local h = tohash(flat)\n"                                                                                   \
    "  if #flat == 0 or h.status ~= 'pending' then redis.call('ZREM', p .. 'pending', id)\n"                       \
    "  elseif tonumber(h.expires or '0') <= now then expire_request(p, id, rk, now)\n"                             \
    "  else\n"                                                                                                     \
    "    bytes = bytes + #(h.statement or '')\n"                                                                   \
    "    if #out > 1 and bytes > tonumber(ARGV[3]) then break end\n"                                               \
    "    out[#out + 1] = flat\n"                                                                                   \
    "  end\n"                                                                                                      \
    "end\n"                                                                                                        \
    "return out\n"

/* GET: one request in any state.  ARGV: prefix id  -> {now_ms, {field, value, ...}} */
#define APPROVALS_LUA_GET                                                                                          \
    APPROVALS_LUA_PRELUDE                                                                                          \
    "return {fmt(now_ms()), redis.call('HGETALL', ARGV[1] .. 'req:' .. ARGV[2])}\n"

#endif
