-- Liveline's publish script: assigns the next seq of a stream, keeps the event
-- in the stream's history and publishes it live, in one atomic step.
--
-- KEYS[1] {prefix}{stream}:seq     KEYS[2] {prefix}{stream}:epoch
-- KEYS[3] {prefix}{stream}:hist    KEYS[4] {prefix}{stream}:job (job streams)
--                                          or {prefix}{stream}:order (order streams)
--                                          (any key of the same slot otherwise)
-- ARGV[1]  channel: {prefix}user:{user}, or {prefix}topic:{topic} for public topics
-- ARGV[2]  user (the owner; "" for public topics)
-- ARGV[3]  event name, e.g. job:status:v1
-- ARGV[4]  stream, e.g. job:42
-- ARGV[5]  data, JSON text
-- ARGV[6]  ts, ms since the Unix epoch
-- ARGV[7]  history length kept (approximate MAXLEN)
-- ARGV[8]  candidate epoch (used when the stream is new or lost its epoch)
-- ARGV[9]  guard: "0" none, "1" job record must exist and not be terminal,
--          "2" order record must exist and not be terminal
-- ARGV[10] new status ("" = leave the record as is)
-- ARGV[11] job: progress / order: filledQty
-- ARGV[12] job: message  / order: price
-- ARGV[13] TTL of the stream's keys in seconds
-- Returns the envelope JSON, or nil when the guard refused.
if ARGV[9] ~= '0' then
  local st = redis.call('HGET', KEYS[4], 'status')
  if (not st) or st == 'completed' or st == 'failed' or st == 'cancelled'
      or st == 'filled' or st == 'rejected' then
    return false
  end
  if ARGV[10] ~= '' then
    if ARGV[9] == '2' then
      redis.call('HSET', KEYS[4], 'status', ARGV[10], 'filledQty', ARGV[11],
        'price', ARGV[12], 'updatedAt', ARGV[6])
    else
      redis.call('HSET', KEYS[4], 'status', ARGV[10], 'progress', ARGV[11],
        'message', ARGV[12], 'updatedAt', ARGV[6])
    end
  end
end
local seq = redis.call('INCR', KEYS[1])
local epoch
if seq == 1 then
  epoch = ARGV[8]
  redis.call('SET', KEYS[2], epoch)
  redis.call('DEL', KEYS[3])
else
  epoch = redis.call('GET', KEYS[2])
  if not epoch then
    epoch = ARGV[8]
    redis.call('SET', KEYS[2], epoch)
  end
end
local seqs = string.format('%d', seq)
local env = '{"stream":' .. cjson.encode(ARGV[4]) .. ',"epoch":' .. cjson.encode(epoch) ..
  ',"seq":' .. seqs .. ',"ts":' .. ARGV[6] .. ',"data":' .. ARGV[5] .. '}'
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '0-' .. seqs, 'event', ARGV[3], 'env', env)
redis.call('PUBLISH', ARGV[1], '{"user":' .. cjson.encode(ARGV[2]) .. ',"event":' ..
  cjson.encode(ARGV[3]) .. ',"envelope":' .. env .. '}')
redis.call('EXPIRE', KEYS[1], ARGV[13])
redis.call('EXPIRE', KEYS[2], ARGV[13])
redis.call('EXPIRE', KEYS[3], ARGV[13])
if ARGV[9] ~= '0' then
  redis.call('EXPIRE', KEYS[4], ARGV[13])
end
return env
