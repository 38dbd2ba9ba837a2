-- Read namespace generations, creating missing ones.
-- KEYS[1..n] generation keys (one per namespace)
-- Returns    {gen1, ..., genN} as integers.
-- A missing generation (never bumped, or evicted) starts at the server's clock
-- in microseconds, so a generation number is never handed out twice: an entry
-- stored under an old generation can never become valid again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local gen = redis.call('GET', key)
  if not gen then
    redis.call('SET', key, now)
    gen = now
  end
  out[i] = tonumber(gen)
end
return out
