-- Several throttles of one request, decided together in one call: all-or-nothing.
-- KEYS[i]  the i-th throttle's key (all in one cluster slot; no key twice)
-- ARGV     per throttle, in KEYS order: its script ("sw": sliding_window.lua, "swc":
--          sliding_window_counter.lua), the number m of its arguments, then those m
--          arguments exactly as that script takes them (its record flag included)
-- Returns  per throttle, in KEYS order, that script's own reply:
--          {admitted (0|1), now_us, then per limit: remaining, reset_us, retry_us}
-- Every throttle is first checked without recording. Only when all of them admit do
-- those asked to record run again, recording (nothing changed in between, and time only
-- lowers a count, so they admit again). When one refuses, nothing is recorded and each
-- reply is that dry run: what DRF issue 6491's take-back would leave, with no take-back.
--@function sliding_window
--@function sliding_window_counter
local scripts = {sw = sliding_window, swc = sliding_window_counter}
local flag_at = {sw = 3, swc = 2}  -- where each script takes its record flag

local calls, pos = {}, 1
for i = 1, #KEYS do
  local kind, m = ARGV[pos], tonumber(ARGV[pos + 1])
  local args = {}
  for j = 1, m do args[j] = ARGV[pos + 1 + j] end
  pos = pos + 2 + m
  calls[i] = {scripts[kind], args, flag_at[kind], args[flag_at[kind]]}
  args[flag_at[kind]] = '0'
end

local out, all = {}, true
for i = 1, #KEYS do
  local c = calls[i]
  out[i] = c[1]({KEYS[i]}, c[2])
  if out[i][1] ~= 1 then all = false end
end
if all then
  for i = 1, #KEYS do
    local c = calls[i]
    if c[4] == '1' then
      c[2][c[3]] = '1'
      out[i] = c[1]({KEYS[i]}, c[2])
    end
  end
end
return out
