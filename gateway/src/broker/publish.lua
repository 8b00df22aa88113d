-- Liveline's publish script: appends one event to a stream (next seq, kept in
-- history, sent live) in one atomic step. Every publisher runs it: the
-- gateway itself and workers in any language (docs/publishing.md).
--
-- KEYS: the stream's four keys, P{T}:seq P{T}:epoch P{T}:hist P{T}:rec, where
--   P is the key prefix (default "ll:") and {T} the stream's slot tag:
--     {job:ID}               for the job stream "job:ID"
--     {topic:NAME}           for the topic NAME
--     {u:LEN:USER}:s:NAME    for USER's private stream NAME (LEN = bytes of USER)
--   The script checks them, so a wrong key is an error, never a stray write.
--   The event goes live on P{u:LEN:OWNER}:live (a job's or private stream's
--   owner) or P{topic:NAME}:live. On a Redis Cluster both share the keys'
--   slot (the gateway picks job ids so that they do), and the script uses
--   sharded pub/sub (SPUBLISH); on one Redis, PUBLISH.
-- ARGV[1]: the call, a JSON object with named fields:
--   stream   required  the stream's name as clients see it ("job:42", "notes", "market:BTC-USD")
--   event    required  the event name, "domain:name:vN"
--   user     the owner; required for a private stream, checked against the
--            job's owner when given, absent for a topic
--   topic    true for a topic (so a missing user is never taken for a topic)
--   history  events kept (approximate; default 1000; topics at most 256)
--   ttl      seconds the stream's keys live after its last event (default 604800)
-- ARGV[2]: the event's data, JSON text, stored and sent as is. More data
--   (ARGV[3], ARGV[4], ... up to 256 in all) publish a batch: one event
--   each, with consecutive seqs, in one step (a job:status:v1 goes alone).
--
-- On a job's stream the job must exist and not have ended, and a
-- job:status:v1 event updates the job record (status, progress, message) in
-- the same step.
--
-- Returns the envelope, JSON text; for a batch, a JSON array of the
-- envelopes in order. Errors (the first word is the code):
--   INVALID   a field is missing or wrong (the message says which)
--   NOTFOUND  no such job, or not the named user's
--   ENDED     the job already ended
local ok, call = pcall(cjson.decode, ARGV[1])
if not ok or type(call) ~= 'table' then
  return redis.error_reply('INVALID ARGV[1] must be a JSON object')
end
local stream, event, user = call['stream'], call['event'], call['user']
if type(stream) ~= 'string' or stream == '' then
  return redis.error_reply('INVALID stream is required')
end
if type(event) ~= 'string' or not string.match(event, '^[a-z0-9_]+:[a-z0-9_]+:v%d+$') then
  return redis.error_reply('INVALID event must be domain:name:vN')
end
if user ~= nil and (type(user) ~= 'string' or user == '') then
  return redis.error_reply('INVALID user must be a non-empty string when given')
end
local count = #ARGV - 1
if count < 1 or count > 256 then
  return redis.error_reply('INVALID ARGV[2..] must be the data of 1 to 256 events')
end
for i = 2, #ARGV do
  if not pcall(cjson.decode, ARGV[i]) then
    return redis.error_reply('INVALID ARGV[' .. i .. '] must be the data, JSON text')
  end
end
local data = ARGV[2]
local prefix = string.match(KEYS[1] or '', '^(.-){')
if not prefix then
  return redis.error_reply('INVALID KEYS[1] must be P{tag}:seq')
end

local kind, id = string.match(stream, '^(job):(.+)$')
local base
if kind then
  base = prefix .. '{' .. stream .. '}:'
elseif call['topic'] == true then
  if user ~= nil then return redis.error_reply('INVALID a topic has no user') end
  kind, base = 'topic', prefix .. '{topic:' .. stream .. '}:'
elseif user ~= nil then
  kind, base = 'private', prefix .. '{u:' .. string.len(user) .. ':' .. user .. '}:s:' .. stream .. ':'
else
  return redis.error_reply('INVALID user is required (or topic: true)')
end
if KEYS[1] ~= base .. 'seq' or KEYS[2] ~= base .. 'epoch' or KEYS[3] ~= base .. 'hist'
    or KEYS[4] ~= base .. 'rec' then
  return redis.error_reply('INVALID KEYS must be ' .. base .. 'seq, epoch, hist, rec')
end

local now = redis.call('TIME')
local ts = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local ttl = tonumber(call['ttl']) or 604800
local keep = tonumber(call['history']) or 1000
if kind == 'topic' and keep > 256 then keep = 256 end

local owner = user or ''
if kind == 'job' then
  local rec = redis.call('HMGET', KEYS[4], 'owner', 'status')
  if not rec[1] or (user ~= nil and rec[1] ~= user) then
    return redis.error_reply('NOTFOUND no such ' .. kind .. ' ' .. id .. (user and (' for ' .. user) or ''))
  end
  local st = rec[2]
  if st == 'completed' or st == 'failed' or st == 'cancelled' then
    return redis.error_reply('ENDED the ' .. kind .. ' ' .. id .. ' already ended')
  end
  owner = rec[1]
  if event == 'job:status:v1' then
    if count > 1 then return redis.error_reply('INVALID job:status:v1 is published one at a time') end
    local d = cjson.decode(data)
    local valid = {queued = true, running = true, completed = true, failed = true, cancelled = true}
    if type(d) ~= 'table' or not valid[d['status']] then
      return redis.error_reply('INVALID job:status:v1 data needs a status: queued, running, completed, failed or cancelled')
    end
    redis.call('HSET', KEYS[4], 'status', d['status'],
      'progress', tostring(tonumber(d['progress']) or 0),
      'message', type(d['message']) == 'string' and d['message'] or '', 'updatedAt', ts)
  end
end

local last = redis.call('INCRBY', KEYS[1], count)
local seq = last - count + 1
-- The epoch key holds "EPOCH WRITER": WRITER is the id of the cluster master
-- that wrote it, or "-" on one Redis. Redis is asked which it is only on a
-- cluster (cheap there) or while the key does not say yet.
local stored = redis.call('GET', KEYS[2])
local epoch, writer
if stored then epoch, writer = string.match(stored, '^(%S+) ?(%S*)$') end
local node = '-'
if writer ~= '-' then
  node = redis.pcall('CLUSTER', 'MYID')
  if type(node) ~= 'string' then node = '-' end
end
if seq == 1 or not epoch or (node ~= '-' and writer ~= node) then
  -- A new stream, one whose keys expired or were lost, or (on a cluster) one
  -- last written by another master: a replica promoted after a failover may
  -- lack the last events its master acknowledged. A new epoch, so no reader
  -- is told its old position continues here.
  epoch = string.format('%08x%08x', tonumber(now[1]), tonumber(now[2]) * 4096 + (seq % 4096))
  redis.call('SET', KEYS[2], epoch .. ' ' .. node, 'EX', ttl)
  if seq == 1 then redis.call('DEL', KEYS[3]) end
elseif writer ~= node then
  redis.call('SET', KEYS[2], epoch .. ' ' .. node, 'EX', ttl)
end
local channel
if kind == 'topic' then
  channel = prefix .. '{topic:' .. stream .. '}:live'
else
  channel = prefix .. '{u:' .. string.len(owner) .. ':' .. owner .. '}:live'
end
local publish = node ~= '-' and 'SPUBLISH' or 'PUBLISH'
local head = '{"stream":' .. cjson.encode(stream) .. ',"epoch":' .. cjson.encode(epoch) .. ',"seq":'
local live = '{"user":' .. cjson.encode(owner) .. ',"event":' .. cjson.encode(event) .. ',"envelope":'
local envs = {}
for i = 0, count - 1 do
  local seqs = string.format('%d', seq + i)
  local env = head .. seqs .. ',"ts":' .. ts .. ',"data":' .. ARGV[2 + i] .. '}'
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', keep, '0-' .. seqs, 'event', event, 'env', env)
  redis.call(publish, channel, live .. env .. '}')
  envs[i + 1] = env
end
-- The keys live `ttl` after the last event, give or take a hundredth of it:
-- refreshed once they have lost that much, not on every event.
if redis.call('PTTL', KEYS[1]) < ttl * 990 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  if kind == 'job' then redis.call('EXPIRE', KEYS[4], ttl) end
end
if count == 1 then return envs[1] end
return '[' .. table.concat(envs, ',') .. ']'
