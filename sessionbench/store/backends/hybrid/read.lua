-- read: serve a cached window, or take a populate lease on a miss.
-- KEYS: list, hash, lease (one session: one hash tag, one cluster slot)
-- ARGV: limit, before_seq ('' = none), ttl_ms, sliding, owner ('' = any), lease token ('' = none), lease_ms, epoch
local h = redis.call('HMGET', KEYS[2], 'last', 'owner', 'epoch')
local epoch = ARGV[8]
local len = 0
if h[1] then len = redis.call('LLEN', KEYS[1]) end
-- an entry whose list is gone (evicted or deleted on its own) is dropped, not served as bypass
if not h[1] or h[3] ~= epoch or (len == 0 and tonumber(h[1]) > 0) then
  local stale = 0
  if h[1] then redis.call('DEL', KEYS[1], KEYS[2]); stale = 1 end
  local leased = 0
  if ARGV[6] ~= '' and redis.call('SET', KEYS[3], ARGV[6], 'PX', ARGV[7], 'NX') then leased = 1 end
  return {'miss', leased, stale}
end
if ARGV[5] ~= '' and h[2] ~= ARGV[5] then return {'forbidden'} end
if ARGV[4] == '1' then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
local last = tonumber(h[1])
local first = last - len + 1
local upper = last
if ARGV[2] ~= '' then upper = math.min(last, tonumber(ARGV[2]) - 1) end
local lower = math.max(1, upper - tonumber(ARGV[1]) + 1)
if upper < lower then return {'hit', last, {}} end
if lower < first then return {'bypass', last} end
-- the encoded messages as they are: joining them here would copy 10 KB once more inside Lua
return {'hit', last, redis.call('LRANGE', KEYS[1], lower - first, upper - first)}
