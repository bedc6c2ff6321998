"""The Lua scripts that make locks, counters and rate limits atomic in Redis (one round trip, no races)."""

from __future__ import annotations

# KEYS[1] counter; ARGV[1] amount; ARGV[2] ttl in ms or ''. The TTL is set only while the key has none, so a
# counter created with a TTL keeps its first expiry (a fixed window) however often it is incremented.
INCREMENT = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

# A lock key holds "<token>:<ttl ms>:<owner>" while held and "<token>:" (a tombstone) after release, until the
# released lease would have expired. Tokens are max(last token + 1, server time in µs): the time floor keeps them
# increasing when Redis forgets the key (expiry, or a restart without persistence), unless its clock steps back.
#
# KEYS[1] lock; ARGV[1] owner; ARGV[2] ttl ms; ARGV[3] '1' = refuse if the key is missing (see RedisLocks).
# Returns {1, token, 0} when acquired, {0, pttl, holder's ttl ms} when held, {0, -2, 0} when refused as missing.
ACQUIRE = """
local current = redis.call('GET', KEYS[1])
local last = 0
if current then
  local token, rest = string.match(current, '^(%d+):(.*)$')
  if rest ~= '' then
    return {0, redis.call('PTTL', KEYS[1]), tonumber(string.match(rest, '^(%d+):'))}
  end
  last = tonumber(token)
elseif ARGV[3] == '1' then
  return {0, -2, 0}
end
local now = redis.call('TIME')
local token = math.max(last + 1, tonumber(now[1]) * 1000000 + tonumber(now[2]))
redis.call('SET', KEYS[1], string.format('%d', token) .. ':' .. ARGV[2] .. ':' .. ARGV[1], 'PX', ARGV[2])
return {1, token, 0}
"""

# KEYS[1] lock; ARGV[1] owner; ARGV[2] token; ARGV[3] ttl ms. 1 when renewed, 0 when not held by this lease.
RENEW = """
local token, owner = string.match(redis.call('GET', KEYS[1]) or '', '^(%d+):%d+:(.*)$')
if token == ARGV[2] and owner == ARGV[1] then
  redis.call('SET', KEYS[1], token .. ':' .. ARGV[3] .. ':' .. owner, 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] lock; ARGV[1] owner; ARGV[2] token. 1 when released, 0 when not held by this lease.
RELEASE = """
local token, owner = string.match(redis.call('GET', KEYS[1]) or '', '^(%d+):%d+:(.*)$')
if token == ARGV[2] and owner == ARGV[1] then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('SET', KEYS[1], token .. ':', 'PX', ttl)
  else
    redis.call('DEL', KEYS[1])
  end
  return 1
end
return 0
"""

# GCRA, the same steps as memory.Gcra in microseconds of server time (so replicas' clocks do not matter).
# KEYS[1] bucket; ARGV[1] limit; ARGV[2] window µs; ARGV[3] cost. Returns {allowed, remaining, retry after µs}.
RATE_LIMIT = """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local interval = window / limit
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + cost * interval
local allow_at = new_tat - window
if allow_at - now > interval * 1e-6 then
  return {0, math.floor((now + window - tat) / interval + 1e-6), math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
return {1, math.floor((now + window - new_tat) / interval + 1e-6), 0}
"""
