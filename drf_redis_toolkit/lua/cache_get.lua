-- Look up a cached response under its namespace's current generation, in one round trip;
-- on a miss, try to take the single-flight lock in the same call.
-- KEYS[1] the namespace's generation key
-- KEYS[2] the entry key (same hash tag, so same cluster slot)
-- KEYS[3] the entry's lock key (same hash tag)
-- ARGV[1] lock token (random per request)
-- ARGV[2] lock lifetime in milliseconds
-- ARGV[3] early-refresh factor beta * -ln(rand) (XFetch); "0" turns early refresh off
-- ARGV[4] an ETag the caller already holds the bytes of (or the client's If-None-Match); "" if none
-- ARGV[5] (optional) "1": return the entry's PTTL on a hit (state 0) and with a vary record
--         (state 6), for a copy kept in process memory (LOCAL_CACHE) that must not outlive it
-- Returns {gen, entry, state, pttl}
--   gen   the namespace's generation; a missing one is created exactly as
--         generation_read.lua does (server clock in microseconds: never reused)
--   entry state 0: the whole entry; state 5: the entry without its body; else ""
--   state 0 hit; 1 miss, the caller now holds the lock; 2 miss, another caller
--         holds the lock (wait for it); 3 miss, a recent holder found the answer
--         uncacheable (run the view, do not wait); 4 hit, but the caller won the
--         early refresh and holds the lock (recompute now); 5 hit, and its ETag is ARGV[4];
--         6 the key holds a vary record (entry = the record): look up the variant it names
--   pttl  milliseconds the entry has left (when ARGV[3] > 0, or ARGV[5] is "1" and the
--         state is 0 or 6; -1 there means no expiry), else -1
-- An entry is "<gen> <compute ms> <etag>\n<metadata>\n<body>", a vary record
-- "<gen> V <epoch> <header,...>\n"; one stored under an older generation, or
-- unreadable, is deleted here.
local gen = redis.call('GET', KEYS[1])
local g
if gen then
  g = tonumber(gen)
else
  local t = redis.call('TIME')
  g = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[1], g)
end
local entry = redis.call('GET', KEYS[2])
if entry then
  local vg = string.match(entry, '^(%d+) V ')
  if vg and tonumber(vg) == g then
    if ARGV[5] == '1' then
      return {g, entry, 6, redis.call('PTTL', KEYS[2])}
    end
    return {g, entry, 6, -1}
  end
  local eg, delta, etag = string.match(entry, '^(%d+) (%d+) ([^\n]*)\n')
  if eg and tonumber(eg) == g then
    local pttl = -1
    local factor = tonumber(ARGV[3])
    if factor and factor > 0 then
      pttl = redis.call('PTTL', KEYS[2])
      if pttl > 0 and tonumber(delta) * factor >= pttl
          and redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
        return {g, '', 4, pttl}
      end
    end
    if ARGV[5] == '1' and pttl == -1 then
      pttl = redis.call('PTTL', KEYS[2])
    end
    if ARGV[4] ~= '' and etag == ARGV[4] then
      local head = #eg + #delta + #etag + 3
      local stop = string.find(entry, '\n', head + 1, true)
      if stop then
        return {g, string.sub(entry, 1, stop), 5, pttl}
      end
    end
    return {g, entry, 0, pttl}
  end
  redis.call('DEL', KEYS[2])
end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {g, '', 1, -1}
end
if redis.call('GET', KEYS[3]) == '!' then
  return {g, '', 3, -1}
end
return {g, '', 2, -1}
