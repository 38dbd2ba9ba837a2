-- Move namespace generations forward (invalidates every entry stored under the old one).
-- KEYS[1..n] generation keys (one per namespace)
-- Returns    {gen1, ..., genN}: the new generations.
-- The new value is max(old + 1, server clock in microseconds), so it is larger
-- than any value the key ever had, even if the key was evicted meanwhile.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i, key in ipairs(KEYS) do
  local gen = tonumber(redis.call('GET', key) or '0') + 1
  if gen < now then gen = now end
  redis.call('SET', key, gen)
  out[i] = gen
end
return out
