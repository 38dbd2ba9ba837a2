-- Exact sliding-window log: decide one request against one or more limits, atomically.
-- KEYS[1]  sorted set of admitted requests: member = "<token>:<i>", score = admission time (µs)
-- ARGV[1]  cost: how many requests this one counts as (>= 0)
-- ARGV[2]  token: random per call, makes members unique even within one microsecond
-- ARGV[3]  1 = record the request if every limit admits it, 0 = only report (dry run)
-- ARGV[4], ARGV[5], ...  pairs of (limit, window in µs), any order
-- Returns  {admitted (0|1), now_us, then per limit in ARGV order: remaining, reset_us, retry_us}
--   remaining: slots left in that window after this decision
--   reset_us:  time until the oldest entry in that window leaves it (0 if empty)
--   retry_us:  time until a request of this cost would be admitted by that limit (0 if it is)
-- Time comes from the Redis server (TIME), so app servers with skewed clocks agree.
-- Each redis.call costs about a microsecond of the server's time, and so does building
-- Lua tables: one limit, admitted, makes TIME, ZREMRANGEBYSCORE, ZCARD, one ZRANGE for the
-- reset (none when the window was empty), ZADD and PEXPIRE; refused at the limit, the
-- retry is the reset's entry, read once.
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local record = ARGV[3] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local n = (#ARGV - 3) / 2
local max_window = 0
for i = 1, n do
  local w = tonumber(ARGV[3 + 2 * i])
  if w > max_window then max_window = w end
end

-- An entry is inside a window of length w while score > now - w.
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - max_window)
local card = redis.call('ZCARD', key)

-- out[3i], out[3i+1], out[3i+2]: limit i's count in its window (made its remaining below),
-- reset and retry.
local out = {1, now}
for i = 1, n do
  local limit, w = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local count = card
  if w < max_window then
    count = redis.call('ZCOUNT', key, '(' .. (now - w), '+inf')
  end
  local reset, retry = 0, 0
  if count > 0 then
    -- The oldest entry of this window (rank card - count) leaves it first.
    local oldest = redis.call('ZRANGE', key, card - count, card - count, 'WITHSCORES')
    reset = tonumber(oldest[2]) + w - now
  end
  local excess = count + cost - limit
  if excess > 0 then
    out[1] = 0
    if cost > limit then
      retry = w  -- can never fit; report a whole window
    elseif excess == 1 then
      retry = reset  -- the oldest entry of the window must leave first
    else
      -- The excess-th oldest entry of this window must leave first.
      local hit = redis.call('ZRANGE', key, card - count + excess - 1, card - count + excess - 1, 'WITHSCORES')
      retry = tonumber(hit[2]) + w - now
    end
  end
  out[3 * i], out[3 * i + 1], out[3 * i + 2] = count, reset, retry
end

local recorded = out[1] == 1 and record
if recorded and cost == 1 then
  redis.call('ZADD', key, now, ARGV[2] .. ':1')  -- the usual case: no table to unpack
elseif recorded and cost > 1 then
  local token = ARGV[2]
  local args = {}
  for j = 1, cost do
    args[#args + 1] = now
    args[#args + 1] = token .. ':' .. j
    if #args >= 1000 or j == cost then  -- keep unpack() well inside Lua's stack
      redis.call('ZADD', key, unpack(args))
      args = {}
    end
  end
end
if recorded and cost > 0 then
  redis.call('PEXPIRE', key, math.ceil(max_window / 1000))
end

for i = 1, n do
  local used = out[3 * i]
  if recorded then used = used + cost end
  if out[3 * i] == 0 and used > 0 then
    out[3 * i + 1] = tonumber(ARGV[3 + 2 * i])  -- the window was empty: this request is its oldest
  end
  out[3 * i] = math.max(tonumber(ARGV[2 + 2 * i]) - used, 0)
end
return out
