-- Release a single-flight lock, only if the caller still holds it.
-- KEYS[1] the lock key
-- ARGV[1] the caller's lock token
-- ARGV[2] milliseconds to leave a pass-through marker ("!") so that waiters run
--         the view at once (the answer was uncacheable); "0" just deletes the lock
-- Returns 1 if the caller held the lock, else 0 (it expired, or another caller took it).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], '!', 'PX', ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
