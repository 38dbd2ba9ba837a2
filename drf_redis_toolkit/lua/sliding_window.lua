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
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local record = ARGV[3] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local n = (#ARGV - 3) / 2
local limits, windows, max_window = {}, {}, 0
for i = 1, n do
  limits[i] = tonumber(ARGV[2 + 2 * i])
  windows[i] = tonumber(ARGV[3 + 2 * i])
  if windows[i] > max_window then max_window = windows[i] end
end

-- An entry is inside a window of length w while score > now - w.
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - max_window)
local card = redis.call('ZCARD', key)

local counts, retries = {}, {}
local admitted = 1
for i = 1, n do
  local count = card
  if windows[i] < max_window then
    count = redis.call('ZCOUNT', key, '(' .. (now - windows[i]), '+inf')
  end
  counts[i] = count
  local excess = count + cost - limits[i]
  if excess > 0 then
    admitted = 0
    if cost > limits[i] then
      retries[i] = windows[i]  -- can never fit; report a whole window
    else
      -- The excess-th oldest entry of this window must leave first.
      local hit = redis.call('ZRANGE', key, card - count + excess - 1, card - count + excess - 1, 'WITHSCORES')
      retries[i] = tonumber(hit[2]) + windows[i] - now
    end
  else
    retries[i] = 0
  end
end

local token = ARGV[2]
if admitted == 1 and record and cost > 0 then
  local args = {}
  for j = 1, cost do
    args[#args + 1] = now
    args[#args + 1] = token .. ':' .. j
    if #args >= 1000 or j == cost then  -- keep unpack() well inside Lua's stack
      redis.call('ZADD', key, unpack(args))
      args = {}
    end
  end
  redis.call('PEXPIRE', key, math.ceil(max_window / 1000))
  card = card + cost
end

local out = {admitted, now}
for i = 1, n do
  local used = counts[i]
  if admitted == 1 and record then used = used + cost end
  local reset = 0
  if used > 0 then
    local oldest = redis.call('ZRANGE', key, card - used, card - used, 'WITHSCORES')
    if oldest[2] then reset = tonumber(oldest[2]) + windows[i] - now end
  end
  out[#out + 1] = math.max(limits[i] - used, 0)
  out[#out + 1] = reset
  out[#out + 1] = retries[i]
end
return out
