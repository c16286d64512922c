-- populate: store a window read from PostgreSQL, only if this read's lease still holds.
-- KEYS: list, hash, lease (one session: one hash tag, one cluster slot)
-- ARGV: lease token, last seq, owner, ttl_ms, epoch, encoded messages...
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 'discarded' end
redis.call('DEL', KEYS[3], KEYS[1])
if #ARGV > 5 then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 6))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
redis.call('HSET', KEYS[2], 'last', ARGV[2], 'owner', ARGV[3], 'epoch', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 'stored'
