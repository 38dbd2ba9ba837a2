-- Add in-process hit/miss counts to the per-namespace counters, in one call.
-- KEYS[1]    the stats hash
-- ARGV[2i-1] a field ("h:<namespace>" or "m:<namespace>")
-- ARGV[2i]   how much to add to it
-- Returns    the number of fields updated.
local n = 0
for i = 1, #ARGV - 1, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  n = n + 1
end
return n
