-- Store a computed response, unless its namespace was invalidated while it was computed,
-- and release the caller's single-flight lock.
-- KEYS[1] the namespace's generation key
-- KEYS[2] the entry key (for a response that varies on request headers: its variant's key)
-- KEYS[3] the caller's single-flight lock key
-- KEYS[4] (optional) the request's base key, where the vary record goes
-- ARGV[1] the generation read BEFORE the view ran
-- ARGV[2] the entry: "<gen> <compute ms> <etag>\n<metadata>\n<body>"
-- ARGV[3] time to live in milliseconds; "0" means no expiry
-- ARGV[4] the caller's lock token; "" if it holds no lock
-- ARGV[5] (with KEYS[4]) the vary record "<gen> V <epoch> <header,...>\n"
-- ARGV[6] (with KEYS[4]) "1": the record was read before the view ran; store only
--         while KEYS[4] still holds it exactly (a deleted or replaced record has
--         dropped every variant of its epoch); "0": a new record, set it
-- Returns 1 if stored, 0 if not (the generation has moved on, or the record has).
local stored = 0
local cur = redis.call('GET', KEYS[1])
if cur and tonumber(cur) == tonumber(ARGV[1]) then
  local ok = true
  if KEYS[4] and ARGV[6] == '1' then
    ok = redis.call('GET', KEYS[4]) == ARGV[5]
  end
  if ok then
    local ttl = tonumber(ARGV[3])
    if ttl > 0 then
      redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
      if KEYS[4] then
        redis.call('SET', KEYS[4], ARGV[5], 'PX', ttl)
      end
    else
      redis.call('SET', KEYS[2], ARGV[2])
      if KEYS[4] then
        redis.call('SET', KEYS[4], ARGV[5])
      end
    end
    stored = 1
  end
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then
  redis.call('DEL', KEYS[3])
end
return stored
