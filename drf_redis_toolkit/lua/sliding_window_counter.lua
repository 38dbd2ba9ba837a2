-- Sliding-window counter (constant memory): decide one request against one or more limits.
-- KEYS[1]  hash of fixed-window counters: field = "<window_us>:<window index>", value = requests
-- ARGV[1]  cost: how many requests this one counts as (>= 0)
-- ARGV[2]  1 = record the request if every limit admits it, 0 = only report (dry run)
-- ARGV[3], ARGV[4], ...  pairs of (limit, window in µs), any order
-- Returns  {admitted (0|1), now_us, then per limit in ARGV order: remaining, reset_us, retry_us}
-- The estimate for a window is previous * (time left of the current fixed window / w) + current:
-- exact when the previous window's requests were spread evenly, approximate otherwise.
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local record = ARGV[2] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local n = (#ARGV - 2) / 2
local admitted = 1
local state = {}
local max_window = 0
for i = 1, n do
  local limit = tonumber(ARGV[1 + 2 * i])
  local w = tonumber(ARGV[2 + 2 * i])
  if w > max_window then max_window = w end
  local idx = math.floor(now / w)
  local start = idx * w
  local cur_field = w .. ':' .. idx
  local both = redis.call('HMGET', key, cur_field, w .. ':' .. (idx - 1))
  local cur = tonumber(both[1] or '0')
  local prev = tonumber(both[2] or '0')
  local left = (start + w - now) / w
  local estimate = prev * left + cur
  local retry = 0
  if estimate + cost > limit then
    admitted = 0
    if cost > limit then
      retry = w
    elseif cur + cost <= limit then
      -- Wait until the previous window's weight has shrunk enough.
      local needed = (limit - cost - cur) / prev  -- the fraction of w that may still be left
      retry = start + w - needed * w - now
    else
      -- Not before the next fixed window, where this one becomes the previous.
      retry = start + w - now + w * (1 - (limit - cost) / cur)
    end
    retry = math.max(math.ceil(retry), 1)
  end
  state[i] = {limit, w, idx, cur_field, estimate, retry, prev, left, start}
end

if admitted == 1 and record and cost > 0 then
  for i = 1, n do
    local s = state[i]
    if redis.call('HINCRBY', key, s[4], cost) == cost then
      -- The first request of a new fixed window: drop this limit's counters older than
      -- the previous window (however many windows passed), so memory stays constant.
      local prefix = s[2] .. ':'
      for _, f in ipairs(redis.call('HKEYS', key)) do
        if string.sub(f, 1, #prefix) == prefix and tonumber(string.sub(f, #prefix + 1)) < s[3] - 1 then
          redis.call('HDEL', key, f)
        end
      end
    end
    s[5] = s[5] + cost
  end
  redis.call('PEXPIRE', key, math.ceil(2 * max_window / 1000))
end

local out = {admitted, now}
for i = 1, n do
  local s = state[i]
  local limit, w, estimate, prev, start = s[1], s[2], s[5], s[7], s[9]
  -- Reset: when the estimate next drops by one request (the previous window decays).
  local reset = start + w - now
  if prev >= 1 then reset = math.min(reset, math.ceil(w / prev)) end
  out[#out + 1] = math.max(math.floor(limit - estimate), 0)
  out[#out + 1] = reset
  out[#out + 1] = s[6]
end
return out
