-- append: extend the cached window with committed messages if they follow it exactly.
-- KEYS: list, hash, lease (one session: one hash tag, one cluster slot)
-- ARGV: first seq, ttl_ms, sliding, size, epoch, encoded messages...
redis.call('DEL', KEYS[3])
local h = redis.call('HMGET', KEYS[2], 'last', 'epoch')
if not h[1] then return 'absent' end
if h[2] ~= ARGV[5] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 'epoch'
end
local last = tonumber(h[1])
local first = tonumber(ARGV[1])
local n = #ARGV - 5
if last >= first + n - 1 then return 'present' end
if last ~= first - 1 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 'gap'
end
if last > 0 and redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[2])
  return 'lost'
end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 6))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
redis.call('HSET', KEYS[2], 'last', first + n - 1)
if ARGV[3] == '1' then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
else
  local pttl = redis.call('PTTL', KEYS[2])
  if pttl > 0 then redis.call('PEXPIRE', KEYS[1], pttl) end
end
return 'extended'
