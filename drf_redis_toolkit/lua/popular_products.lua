-- Most viewed products over several daily sorted sets, in one round trip.
-- KEYS[1]    scratch key for the union (deleted before returning)
-- KEYS[2..n] one sorted set per day: member = product id, score = views
-- ARGV[1]    how many products to return
-- Returns    a flat list {member1, score1, member2, score2, ...}, highest score first.
local days = #KEYS - 1
redis.call('ZUNIONSTORE', KEYS[1], days, unpack(KEYS, 2))
local top = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
redis.call('DEL', KEYS[1])
return top
