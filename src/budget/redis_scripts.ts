/**
 * Lua for the Redis budget store. Each script is one atomic check-and-update,
 * so no replica ever reads a counter and writes it back from TypeScript. The
 * time is Redis's own, so replicas with drifting clocks share one bucket.
 * The logic mirrors MemoryBudgetStore; tests hold both to one contract.
 */

const PRELUDE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local MIN = 60000
local function level(key, cap)
  local v = redis.call('HMGET', key, 't', 'ts')
  if not v[1] then return cap end
  local lvl = tonumber(v[1]) + math.max(0, now - tonumber(v[2])) * cap / MIN
  if lvl > cap then return cap end
  return lvl
end
local function wait(lvl, want, cap)
  if lvl >= want then return 0 end
  return math.ceil((want - lvl) * MIN / cap)
end
-- A bucket lives until it would be full again, so a debt is never forgotten.
local function store(key, lvl, cap)
  redis.call('HSET', key, 't', tostring(lvl), 'ts', now)
  redis.call('PEXPIRE', key, math.max(MIN, wait(lvl, cap, cap)))
end
`;

/**
 * KEYS: req tenant, req user, tok tenant, tok user, spend tenant-day,
 *   tenant-month, user-day, user-month, global-day, override, alert-day, alert-month
 * ARGV: rpm, user_rpm, tpm, user_tpm, tokens, managed (0|1), reserve,
 *   reserve_downgraded, budget tenant-day, tenant-month, user-day, user-month,
 *   global-day, alert, downgrade, block, day ttl s, month ttl s, force (0|1)
 * Returns: ok (0|1), reason, retry ms, fraction (string), downgraded, alert
 *   day, alert month, reserved, then limit, remaining, reset ms for requests
 *   and for tokens, then the five spend counters after the call.
 * With force, nothing is refused or downgraded: a locally admitted request's
 * actual usage is charged after the fact.
 */
export const ADMIT_LUA = PRELUDE + `
local caps = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local lv = {}
for i = 1, 4 do lv[i] = level(KEYS[i], caps[i]) end
local tokens = tonumber(ARGV[5])
local cost = {1, 1, math.min(tokens, caps[3]), math.min(tokens, caps[4])}
local function window(a, b)
  local i = a
  if lv[b] < lv[a] then i = b end
  local rem = math.floor(lv[i])
  if rem < 0 then rem = 0 end
  return caps[i], rem, wait(lv[i], caps[i], caps[i])
end
local force = ARGV[19] == '1'
local spent = {0, 0, 0, 0, 0}
local function reply(ok, reason, retry, frac, down, ad, am, reserved)
  local rl, rr, rs = window(1, 2)
  local tl, tr, ts = window(3, 4)
  return {ok, reason, retry, tostring(frac), down, ad, am, reserved, rl, rr, rs, tl, tr, ts,
    spent[1], spent[2], spent[3], spent[4], spent[5]}
end

local rw = math.max(wait(lv[1], 1, caps[1]), wait(lv[2], 1, caps[2]))
if rw > 0 and not force then return reply(0, 'requests', rw, 0, 0, 0, 0, 0) end
local tw = math.max(wait(lv[3], cost[3], caps[3]), wait(lv[4], cost[4], caps[4]))
if tw > 0 and not force then return reply(0, 'tokens', tw, 0, 0, 0, 0, 0) end

local frac, down, ad, am, reserved = 0, 0, 0, 0, 0
if ARGV[6] == '1' then
  local fr = {}
  for i = 1, 5 do spent[i] = tonumber(redis.call('GET', KEYS[4 + i]) or '0') end
  for i = 1, 4 do
    local b = tonumber(ARGV[8 + i])
    fr[i] = 0
    if b > 0 then fr[i] = spent[i] / b end
    if fr[i] > frac then frac = fr[i] end
  end
  local gcap = tonumber(ARGV[13])
  if gcap > 0 and spent[5] >= gcap and not force then return reply(0, 'global_cap', 0, frac, 0, 0, 0, 0) end
  if not force and frac >= tonumber(ARGV[16]) and redis.call('EXISTS', KEYS[10]) == 0 then
    return reply(0, 'budget', 0, frac, 0, 0, 0, 0)
  end
  reserved = tonumber(ARGV[7])
  if not force and frac >= tonumber(ARGV[15]) and tonumber(ARGV[8]) > 0 then
    down = 1
    reserved = tonumber(ARGV[8])
  end
  for i = 1, 5 do
    spent[i] = redis.call('INCRBY', KEYS[4 + i], reserved)
    if i == 2 or i == 4 then redis.call('EXPIRE', KEYS[4 + i], ARGV[18])
    else redis.call('EXPIRE', KEYS[4 + i], ARGV[17]) end
  end
  local alert = tonumber(ARGV[14])
  if fr[1] >= alert and redis.call('SET', KEYS[11], '1', 'NX', 'EX', ARGV[17]) then ad = 1 end
  if fr[2] >= alert and redis.call('SET', KEYS[12], '1', 'NX', 'EX', ARGV[18]) then am = 1 end
end

for i = 1, 4 do
  lv[i] = lv[i] - cost[i]
  store(KEYS[i], lv[i], caps[i])
end
return reply(1, 'ok', 0, frac, down, ad, am, reserved)
`;

/**
 * KEYS: tok tenant, tok user, spend tenant-day, tenant-month, user-day,
 *   user-month, global-day
 * ARGV: tpm, user_tpm, token delta, spend delta, day ttl s, month ttl s
 */
export const SETTLE_LUA = PRELUDE + `
for i = 1, 2 do
  local cap = tonumber(ARGV[i])
  local lvl = level(KEYS[i], cap) - tonumber(ARGV[3])
  if lvl > cap then lvl = cap end
  store(KEYS[i], lvl, cap)
end
local d = tonumber(ARGV[4])
if d ~= 0 then
  for i = 3, 7 do
    redis.call('INCRBY', KEYS[i], d)
    if i == 4 or i == 6 then redis.call('EXPIRE', KEYS[i], ARGV[6])
    else redis.call('EXPIRE', KEYS[i], ARGV[5]) end
  end
end
return 1
`;

/** KEYS: one spend counter. ARGV: mode (set|incr), micro-dollars, ttl s. */
export const SPEND_LUA = `
if ARGV[1] == 'set' then redis.call('SET', KEYS[1], ARGV[2])
else redis.call('INCRBY', KEYS[1], ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
`;
