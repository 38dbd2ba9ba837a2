-- Count one view of a product in today's sorted set, in one round trip.
-- KEYS[1]    today's sorted set: member = product id, score = views
-- ARGV[1]    the product id
-- ARGV[2]    seconds the day's set lives after its last view
-- Returns    today's count for the product (an integer).
local views = redis.call('ZINCRBY', KEYS[1], 1, ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return tonumber(views)
