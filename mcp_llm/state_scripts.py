"""The Lua scripts the shared state runs in Redis (state_redis.py): each exchange is one script, so one
round trip, and atomic (a lease is taken only while the count is below the limit, with no race between
replicas). Keys, under `[state] key_prefix` (P):

    P:circuits              hash: `f|<key>` consecutive failures, `o|<key>` when it (re)opened (ms)
    P:lease:<provider>      sorted set: a member per request in flight, scored by its expiry (ms)
    P:stats:…               the fleet's counters since start, a hash per scope and a capped latency sample
    P:history:<minute>      the fleet's counters of one minute (history.py's names), kept two hours
    P:cache:<key>, P:cache  the response cache's entries, and their index by expiry
    P:spend:<day>           the day's spending under the budget (budget.py), in nano-dollars, kept two days
    P:once                  hash: per replica and kind, the number of the last batch of counts added

Times are Redis's (`TIME`), so the replicas' clocks need not agree. A batch of counts keeps its number
until Redis confirms it; one sent again after a lost reply is not added twice (`P:once`).
"""

from __future__ import annotations

ONCE_TTL_S = 7 * 86_400
HISTORY_TTL_S = 2 * 3600

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1] the circuits hash, KEYS[2] the lease set (KEYS[1] again when no lease is taken or given back), KEYS[3]
# the once hash. ARGV: threshold, cool-down ms, batches of circuit changes (JSON [[n, {key: [reset, failures]}]],
# or ''), this replica's once field, lease op ('', 'acquire', 'release'), member, limit, lease ttl ms, the circuit
# keys an acquire waits on (JSON). Returns Redis's time (ms), the lease's fate ('ok', 'full', 'open' or ''), and
# every circuit.
SYNC = _NOW + """
local circuits = KEYS[1]
if ARGV[3] ~= '' then
  local done = tonumber(redis.call('HGET', KEYS[3], ARGV[4]) or '0')
  for _, batch in ipairs(cjson.decode(ARGV[3])) do
    if batch[1] > done then
      done = batch[1]
      for key, change in pairs(batch[2]) do
        if change[1] == 1 then redis.call('HDEL', circuits, 'f|' .. key, 'o|' .. key) end
        if change[2] > 0 then
          local failures = redis.call('HINCRBY', circuits, 'f|' .. key, change[2])
          if failures >= tonumber(ARGV[1]) then redis.call('HSET', circuits, 'o|' .. key, now) end
        end
      end
    end
  end
  redis.call('HSET', KEYS[3], ARGV[4], done)
  redis.call('EXPIRE', KEYS[3], ONCE_TTL_S)
end
local lease = ''
if ARGV[5] == 'acquire' then
  lease = 'ok'
  for _, key in ipairs(cjson.decode(ARGV[9])) do
    local opened = redis.call('HGET', circuits, 'o|' .. key)
    if opened and now - tonumber(opened) < tonumber(ARGV[2]) then lease = 'open' end
  end
  if lease == 'ok' then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
    if redis.call('ZCARD', KEYS[2]) < tonumber(ARGV[7]) then
      redis.call('ZADD', KEYS[2], now + tonumber(ARGV[8]), ARGV[6])
      redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[8]))
    else
      lease = 'full'
    end
  end
elseif ARGV[5] == 'release' then
  redis.call('ZREM', KEYS[2], ARGV[6])
end
return {now, lease, redis.call('HGETALL', circuits)}
""".replace("ONCE_TTL_S", str(ONCE_TTL_S))

# KEYS: lease sets. ARGV: ttl ms, how many are renewed (their member's expiry moved on, only while Redis still
# has it: one given back meanwhile stays given back), how many are registered (taken while Redis was away:
# added), then a member per key; the rest are given back.
LEASES = _NOW + """
local ttl, renewed, registered = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  if i <= renewed then
    redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 3])
    redis.call('PEXPIRE', key, 2 * ttl)
  elseif i <= renewed + registered then
    redis.call('ZADD', key, now + ttl, ARGV[i + 3])
    redis.call('PEXPIRE', key, 2 * ttl)
  else
    redis.call('ZREM', key, ARGV[i + 3])
  end
end
return now
"""

# KEYS[1] the once hash. ARGV: prefix, this replica's once field, batches (JSON [[n, {stats, history}]] or ''), max
# keys per table, sample size, now (epoch s), '1' to read the fleet's counters back. `stats` is
# stats.Stats.take_delta's, each latency sample with a uniform random number per value (`r`), as Lua's own random
# is not one; `history` is history.History.take_delta's, {minute: [[name, value as text], ...]}.
STATS = """
local prefix, max_keys, size = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[5])
local function sample(hash, list, latency)
  local seen = tonumber(redis.call('HGET', hash, 'latency_count') or '0')
  local step = latency.n / #latency.v
  for i, value in ipairs(latency.v) do
    if redis.call('LLEN', list) < size then
      redis.call('RPUSH', list, value)
    else
      local slot = math.floor(latency.r[i] * (seen + step * i))
      if slot < size then redis.call('LSET', list, slot, value) end
    end
  end
  redis.call('HINCRBY', hash, 'latency_count', latency.n)
end
local function add(hash, list, scope)
  for name, value in pairs(scope) do
    if name == 'failures' then
      for kind, n in pairs(value) do redis.call('HINCRBY', hash, 'failures|' .. kind, n) end
    elseif name == 'latency' then
      sample(hash, list, value)
    elseif name == 'provider' then
      redis.call('HSET', hash, 'provider', value)
    elseif name == 'cost_usd' then
      redis.call('HINCRBYFLOAT', hash, name, value)
    else
      redis.call('HINCRBY', hash, name, value)
    end
  end
end
local function scope(kind, name)
  local names = prefix .. ':stats:' .. kind
  if redis.call('SISMEMBER', names, name) == 0 then
    if redis.call('SCARD', names) >= max_keys then name = '(other)' end
    redis.call('SADD', names, name)
  end
  return prefix .. ':stats:' .. kind .. ':' .. name, prefix .. ':stats:lat:' .. kind .. ':' .. name, name
end
if ARGV[3] ~= '' then
  local done = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '0')
  for _, batch in ipairs(cjson.decode(ARGV[3])) do
    if batch[1] > done then
      done = batch[1]
      local delta = batch[2].stats
      if delta then
        redis.call('SETNX', prefix .. ':stats:since', ARGV[6])
        add(prefix .. ':stats:calls', prefix .. ':stats:lat:calls', delta.calls)
        for name, counters in pairs(delta.providers) do
          local hash, list = scope('p', name)
          add(hash, list, counters)
        end
        for name, counters in pairs(delta.models) do
          local hash, list, kept = scope('m', name)
          if kept ~= name then counters.provider = '(other)' end
          add(hash, list, counters)
        end
      end
      for minute, counters in pairs(batch[2].history or {}) do
        local hash = prefix .. ':history:' .. minute
        for _, pair in ipairs(counters) do redis.call('HINCRBYFLOAT', hash, pair[1], pair[2]) end
        redis.call('EXPIRE', hash, HISTORY_TTL_S)
      end
    end
  end
  redis.call('HSET', KEYS[1], ARGV[2], done)
  redis.call('EXPIRE', KEYS[1], ONCE_TTL_S)
end
if ARGV[7] ~= '1' then return 0 end
local function read(hash, list)
  local values = redis.call('LRANGE', list, 0, -1)
  local n = #values
  local p50, p95 = false, false
  if n > 0 then
    local sorted = {}
    for i = 1, n do sorted[i] = {tonumber(values[i]), values[i]} end
    table.sort(sorted, function(a, b) return a[1] < b[1] end)
    local function at(q1000) return sorted[math.min(math.max(1, math.ceil(q1000 * n / 1000)), n)][2] end
    p50, p95 = at(500), at(950)
  end
  return {redis.call('HGETALL', hash), p50, p95}
end
local since = redis.call('GET', prefix .. ':stats:since') or ''
local out = {since, read(prefix .. ':stats:calls', prefix .. ':stats:lat:calls')}
for _, kind in ipairs({'p', 'm'}) do
  local names = redis.call('SMEMBERS', prefix .. ':stats:' .. kind)
  local scopes = {}
  for i, name in ipairs(names) do
    scopes[i] = read(prefix .. ':stats:' .. kind .. ':' .. name, prefix .. ':stats:lat:' .. kind .. ':' .. name)
  end
  table.insert(out, names)
  table.insert(out, scopes)
end
return out
""".replace("ONCE_TTL_S", str(ONCE_TTL_S)).replace("HISTORY_TTL_S", str(HISTORY_TTL_S))

# ARGV: prefix, then the minutes to read (epoch seconds). Returns each minute's counters (HGETALL), in order.
HISTORY = """
local out = {}
for i = 2, #ARGV do out[i - 1] = redis.call('HGETALL', ARGV[1] .. ':history:' .. ARGV[i]) end
return out
"""

# KEYS[1] the entry, KEYS[2] the index. ARGV: value, ttl ms, max entries.
CACHE_SET = _NOW + """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  for _, key in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do redis.call('DEL', key) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
return over
"""

# KEYS[1] the day's spending. ARGV: the amount to add (a negative one, a hold settled below its worst case, is
# always added), the day's limit (-1: none, to settle or read), what this replica spent while Redis was away
# (added first, whatever the limit), the key's ttl in seconds. Returns whether the amount was added, and the
# day's total after.
SPEND = """
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
local carried, amount = tonumber(ARGV[3]), tonumber(ARGV[1])
if carried ~= 0 then total = redis.call('INCRBY', KEYS[1], carried) end
local taken = 0
local limit = tonumber(ARGV[2])
if amount < 0 or limit < 0 or total + amount <= limit then
  total = redis.call('INCRBY', KEYS[1], amount)
  taken = 1
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {taken, total}
"""
SPEND_TTL_S = 2 * 86_400

SCRIPTS = {"sync": SYNC, "leases": LEASES, "stats": STATS, "history": HISTORY, "cache_set": CACHE_SET,
           "spend": SPEND}
