-- Store a computed response, unless its namespace was invalidated while it was computed,
-- and release the caller's single-flight lock.
-- KEYS[1] the namespace's generation key
-- KEYS[2] the entry key
-- KEYS[3] the entry's lock key
-- ARGV[1] the generation read BEFORE the view ran
-- ARGV[2] the entry: "<gen> <compute ms> <etag>\n<metadata>\n<body>"
-- ARGV[3] time to live in milliseconds; "0" means no expiry
-- ARGV[4] the caller's lock token; "" if it holds no lock
-- Returns 1 if stored, 0 if the generation has moved on (the answer is already stale).
local stored = 0
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) == tonumber(ARGV[1]) then
  if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
  else
    redis.call('SET', KEYS[2], ARGV[2])
  end
  stored = 1
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('DEL', KEYS[3])
end
return stored
