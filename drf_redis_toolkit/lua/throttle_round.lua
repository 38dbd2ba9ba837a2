-- Several throttles of one request, decided together in one call: all-or-nothing.
-- KEYS[i]  the i-th throttle's key (all in one cluster slot; no key twice)
-- ARGV     per throttle, in KEYS order: its script ("sw": sliding_window.lua, "swc":
--          sliding_window_counter.lua), the number m of its arguments, then those m
--          arguments exactly as that script takes them (its record flag included)
-- Returns  per throttle, in KEYS order, that script's own reply:
--          {admitted (0|1), now_us, then per limit: remaining, reset_us, retry_us}
-- The throttles run in order, each exactly as its own script would. When one refuses,
-- what the ones before it recorded is taken back here (their replies then report what
-- is left, as DRF issue 6491's take-back would), and the ones after it only report: the
-- same outcome as deciding them one call at a time, in one call.
--@function sliding_window
--@function sliding_window_counter
local scripts = {sw = sliding_window, swc = sliding_window_counter}
local flag_at = {sw = 3, swc = 2}  -- where each script takes its record flag
local limits_at = {sw = 4, swc = 3}  -- where its (limit, window) pairs start

-- Take back what throttle `i` recorded (its reply says when), and report it so.
local function take_back(key, kind, args, reply)
  local cost = tonumber(args[1])
  if cost == 0 then return end
  if kind == 'sw' then
    local members = {}
    for j = 1, cost do
      members[#members + 1] = args[2] .. ':' .. j
      if #members >= 1000 or j == cost then
        redis.call('ZREM', key, unpack(members))
        members = {}
      end
    end
  end
  local now = reply[2]
  local l = 0
  for p = limits_at[kind], #args, 2 do
    local limit, w = tonumber(args[p]), tonumber(args[p + 1])
    if kind == 'swc' then
      redis.call('HINCRBY', key, w .. ':' .. math.floor(now / w), -cost)
    end
    local at = 3 + 3 * l
    reply[at] = math.min(limit, reply[at] + cost)
    l = l + 1
  end
end

local calls, pos = {}, 1
for i = 1, #KEYS do
  local kind, m = ARGV[pos], tonumber(ARGV[pos + 1])
  local args = {}
  for j = 1, m do args[j] = ARGV[pos + 1 + j] end
  pos = pos + 2 + m
  calls[i] = {kind, args}
end

local out, refused = {}, false
for i = 1, #KEYS do
  local kind, args = calls[i][1], calls[i][2]
  if refused then args[flag_at[kind]] = '0' end
  out[i] = scripts[kind]({KEYS[i]}, args)
  if out[i][1] ~= 1 and not refused then
    refused = true
    for j = 1, i - 1 do
      local earlier = calls[j]
      if earlier[2][flag_at[earlier[1]]] == '1' then
        take_back(KEYS[j], earlier[1], earlier[2], out[j])
      end
    end
  end
end
return out
