-- Liveline's publish script: appends events to streams (next seq, kept in
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
--   sharded pub/sub (SPUBLISH); on one Redis, PUBLISH. One event goes as
--   {"user":U,"event":E,"envelope":ENVELOPE}; a batch's together, as
--   {"user":U,"event":E,"envelopes":[ENVELOPE,...]}, at most LIVE_BYTES of
--   envelopes in one message (the gateway reads both).
-- ARGV[1]: the call, a JSON object with named fields:
--   stream   required  the stream's name as clients see it ("job:42", "notes", "market:BTC-USD")
--   event    required  the event name, "domain:name:vN"
--   user     the owner; required for a private stream, checked against the
--            job's owner when given, absent for a topic
--   topic    true for a topic (so a missing user is never taken for a topic)
--   history  events kept (approximate; default 1000; topics at most 256), a
--            whole number from 1 to 2147483647
--   ttl      seconds the stream's keys live after its last event (default
--            604800), a whole number from 1 to 2147483647
--   checked  true: the caller vouches its data is JSON text as ARGV[2] says
--            (its JSON writer follows RFC 8259 and it checked the depth)
--            and its names are UTF-8, and the script does not check them
--            again. Data that is not would be stored and break every
--            reader: leave it out unless sure (the gateway's own publisher
--            sends it)
-- ARGV[2]: the event's data, JSON text as RFC 8259 writes it (UTF-8, nested at
--   most 125 deep), stored and sent as is. More data
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
--
-- A group: ARGV[1] a JSON array of calls, each as above plus
--   count    how many events' data it takes (default 1)
-- publishes on several streams in one step (on a cluster, streams of one
-- slot). KEYS hold each call's four keys in turn, ARGV[2..] each call's data
-- in turn (up to 256 in all). Every call succeeds or fails alone; the reply
-- is a JSON array, one item per call in order: {"epoch":E,"seq":N,"ts":T}
-- (N the seq of its first event, the others follow; T the time in ms) or
-- {"error":"CODE message"}. Only a malformed group is an error of its own.

local function decode(text)
  local ok, value = pcall(cjson.decode, text)
  if ok then return value end
  return nil
end

-- Whether every number in a decoded value is finite (1e999 decodes to inf).
local function finite(value)
  local t = type(value)
  if t == 'number' then
    return value == value and value ~= math.huge and value ~= -math.huge
  end
  if t == 'table' then
    for _, item in pairs(value) do
      if not finite(item) then return false end
    end
  end
  return true
end

-- Whether `text` is UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
-- past U+10FFFF). cjson passes any byte through, and text that is not UTF-8
-- is refused by every reader. Each valid sequence of two to four bytes is
-- replaced by one ASCII byte (so no two pieces can join into a sequence); a
-- byte of 128 or more left over is not UTF-8.
local function utf8(text)
  if not string.find(text, '[\128-\255]') then return true end
  local s = string.gsub(text, '[\194-\223][\128-\191]', '_')
  s = string.gsub(s, '\224[\160-\191][\128-\191]', '_')
  s = string.gsub(s, '[\225-\236\238\239][\128-\191][\128-\191]', '_')
  s = string.gsub(s, '\237[\128-\159][\128-\191]', '_')
  s = string.gsub(s, '\240[\144-\191][\128-\191][\128-\191]', '_')
  s = string.gsub(s, '[\241-\243][\128-\191][\128-\191][\128-\191]', '_')
  s = string.gsub(s, '\244[\128-\143][\128-\191][\128-\191]', '_')
  return not string.find(s, '[\128-\255]')
end

-- The deepest data (arrays and objects within each other) a client parsing
-- the whole event packet with serde_json reads: its limit, 127 levels, less
-- the packet's array and the envelope.
local MAX_DEPTH = 125

-- Whether `text` is one JSON value as every reader parses it (RFC 8259),
-- cjson's settings made strict by the caller ([`strict_data`]). cjson alone
-- also takes hex, out-of-range numbers and numbers written 1. or -.5, raw
-- control characters in strings, and deeper nesting, which would be stored,
-- sent, and fail in the gateway and the clients. (Lua's pattern matching
-- costs about a microsecond per scan of a short text: the text is scanned
-- whole once, the checks then read what stands between its strings.)
local function strict(text)
  local ok, value = pcall(cjson.decode, text)
  if not ok then return false end
  -- cjson read it: between strings stand only structure, numbers, literals
  -- and whitespace; with the escapes taken out, a string is a quote, no
  -- quote, a quote. (Bytes past ASCII can stand only in strings.)
  local plain = text
  if string.find(text, '\\', 1, true) then plain = string.gsub(text, '\\.', '') end
  local between = string.gsub(plain, '"[^"%c\128-\255]*"', '#')
  if string.find(between, '"', 1, true) then
    -- A string holds bytes past ASCII (the text, escapes and all, must be
    -- UTF-8), or a control character (or DEL, which may stand there).
    if not utf8(text) then return false end
    for str in string.gmatch(plain, '"[^"]*"') do
      if string.find(str, '[%z\1-\31]') then return false end
    end
    between = string.gsub(plain, '"[^"]*"', '#')
  end
  if string.find(between, '.', 1, true) then
    local padded = between .. ' '
    if string.find(padded, '%.[^%d]') or string.find(padded, '%-%.') then return false end
  end
  -- An exponent, or digits enough for a number past a double's range.
  if (string.find(between, '%d[eE]') or (#between > 308 and string.find(between, string.rep('%d', 309))))
      and not finite(value) then
    return false
  end
  return true
end

-- The index of the first of ARGV[first .. first + count - 1] that is not
-- strict JSON data ([`strict`]), or nil. cjson's settings (shared by every
-- script on this Redis) are made strict for the check and left as found.
local function strict_data(first, count)
  local lenient, depth = cjson.decode_invalid_numbers(), cjson.decode_max_depth()
  cjson.decode_invalid_numbers(false)
  cjson.decode_max_depth(MAX_DEPTH)
  local bad
  for i = first, first + count - 1 do
    if not strict(ARGV[i]) then
      bad = i
      break
    end
  end
  cjson.decode_invalid_numbers(lenient)
  cjson.decode_max_depth(depth)
  return bad
end

-- The most bytes of envelopes one live message of a batch carries: the
-- gateway reads a message whole before it delivers any of it.
local LIVE_BYTES = 65536

-- Publishes the live message of a batch gathered in `parts` (its head and
-- envelopes, commas between): made once, whole.
local function send_batch(command, channel, parts)
  parts[#parts + 1] = ']}'
  redis.call(command, channel, table.concat(parts))
end

-- The largest ttl (seconds) and history (events) a call may ask for.
local MAX_WHOLE = 2147483647

-- Whether `n` is a whole number from 1 to MAX_WHOLE.
local function whole(n)
  return type(n) == 'number' and n >= 1 and n <= MAX_WHOLE and n % 1 == 0
end

local now, stamp, node
-- Redis's clock (TIME's seconds and microseconds, text) and the time in ms
-- as text, and, on a cluster, this master's id: asked at most once per call
-- of the script. The ms are cut from TIME's text (the microseconds padded to
-- six digits, their first three): tonumber and string.format of a double
-- cost about 6,000 instructions (glibc's strtod and printf).
local function clock()
  if not now then
    now = redis.call('TIME')
    stamp = now[1] .. string.sub(string.rep('0', 6 - #now[2]) .. now[2], 1, 3)
  end
  return now, stamp
end
local function whoami()
  if not node then
    node = redis.pcall('CLUSTER', 'MYID')
    if type(node) ~= 'string' then node = '-' end
  end
  return node
end

-- Appends the `count` events whose data start at ARGV[first] to the stream of
-- `call`, whose keys start at KEYS[k]. Returns the epoch (JSON text), the
-- first seq (text), ts, and when `reply`, the envelope (JSON text; a JSON
-- array of them for several); or nil and the error.
local function append(call, k, first, count, reply)
  if type(call) ~= 'table' then return nil, 'INVALID a call must be a JSON object' end
  local stream, event, user = call['stream'], call['event'], call['user']
  if type(stream) ~= 'string' or stream == '' then
    return nil, 'INVALID stream is required'
  end
  if type(event) ~= 'string' or not string.match(event, '^[a-z0-9_]+:[a-z0-9_]+:v%d+$') then
    return nil, 'INVALID event must be domain:name:vN'
  end
  if user ~= nil and (type(user) ~= 'string' or user == '') then
    return nil, 'INVALID user must be a non-empty string when given'
  end
  -- Checked before anything is written: Redis refuses such a number only
  -- once the seq has moved (or, for a ttl of 0, drops the keys after).
  local ttl, keep = call['ttl'], call['history']
  if ttl == nil then
    ttl = 604800
  elseif not whole(ttl) then
    return nil, 'INVALID ttl must be whole seconds from 1 to ' .. MAX_WHOLE
  end
  if keep == nil then
    keep = 1000
  elseif not whole(keep) then
    return nil, 'INVALID history must be a whole number of events from 1 to ' .. MAX_WHOLE
  end
  local bad
  if call['checked'] ~= true then
    -- The names go into every envelope as they are.
    if not utf8(stream) or (user and not utf8(user)) then
      return nil, 'INVALID stream and user must be UTF-8 text'
    end
    bad = strict_data(first, count)
  end
  if bad then
    return nil, 'INVALID ARGV[' .. bad .. '] must be the data, JSON text (RFC 8259: UTF-8, no NaN, '
      .. 'Infinity, hex or out-of-range numbers, no raw control characters in strings)'
  end
  local seqkey, epochkey, histkey, reckey = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local prefix = string.match(seqkey or '', '^(.-){')
  if not prefix then
    return nil, 'INVALID KEYS[' .. k .. '] must be P{tag}:seq'
  end

  local kind, id = string.match(stream, '^(job):(.+)$')
  local base
  if kind then
    base = prefix .. '{' .. stream .. '}:'
  elseif call['topic'] == true then
    if user ~= nil then return nil, 'INVALID a topic has no user' end
    kind, base = 'topic', prefix .. '{topic:' .. stream .. '}:'
  elseif user ~= nil then
    kind, base = 'private', prefix .. '{u:' .. string.format('%d', #user) .. ':' .. user .. '}:s:' .. stream .. ':'
  else
    return nil, 'INVALID user is required (or topic: true)'
  end
  if seqkey ~= base .. 'seq' or epochkey ~= base .. 'epoch' or histkey ~= base .. 'hist'
      or reckey ~= base .. 'rec' then
    return nil, 'INVALID KEYS must be ' .. base .. 'seq, epoch, hist, rec'
  end

  if kind == 'topic' and keep > 256 then keep = 256 end
  -- Formatted once, not by redis.call on every XADD.
  local keeps = keep == 1000 and '1000' or string.format('%d', keep)
  local owner = user or ''
  local data = ARGV[first]
  local t, ts = clock()
  if kind == 'job' then
    local rec = redis.call('HMGET', reckey, 'owner', 'status')
    if not rec[1] or (user ~= nil and rec[1] ~= user) then
      return nil, 'NOTFOUND no such ' .. kind .. ' ' .. id .. (user and (' for ' .. user) or '')
    end
    local st = rec[2]
    if st == 'completed' or st == 'failed' or st == 'cancelled' then
      return nil, 'ENDED the ' .. kind .. ' ' .. id .. ' already ended'
    end
    owner = rec[1]
    if event == 'job:status:v1' then
      if count > 1 then return nil, 'INVALID job:status:v1 is published one at a time' end
      local d = decode(data)
      local valid = {queued = true, running = true, completed = true, failed = true, cancelled = true}
      if type(d) ~= 'table' or not valid[d['status']] then
        return nil, 'INVALID job:status:v1 data needs a status: queued, running, completed, failed or cancelled'
      end
      redis.call('HSET', reckey, 'status', d['status'],
        'progress', tostring(tonumber(d['progress']) or 0),
        'message', type(d['message']) == 'string' and d['message'] or '', 'updatedAt', ts)
    end
  end

  -- On every event's path, numbers become text through string.format('%d'),
  -- never by `..` or as an argument of redis.call: Lua writes those with
  -- printf's %.14g or %.17g, about 2,000 instructions each.
  local last = redis.call('INCRBY', seqkey, count == 1 and '1' or string.format('%d', count))
  local seq = last - count + 1
  -- The epoch key holds "EPOCH WRITER": WRITER is the id of the cluster master
  -- that wrote it, or "-" on one Redis. Redis is asked which it is only on a
  -- cluster (cheap there) or while the key does not say yet.
  local stored = redis.call('GET', epochkey)
  local epoch, writer
  if stored then epoch, writer = string.match(stored, '^(%S+) ?(%S*)$') end
  local here = '-'
  if writer ~= '-' then here = whoami() end
  if seq == 1 or not epoch or (here ~= '-' and writer ~= here) then
    -- A new stream, one whose keys expired or were lost, or (on a cluster) one
    -- last written by another master: a replica promoted after a failover may
    -- lack the last events its master acknowledged. A new epoch, so no reader
    -- is told its old position continues here.
    epoch = string.format('%08x%08x', tonumber(t[1]), tonumber(t[2]) * 4096 + (seq % 4096))
    redis.call('SET', epochkey, epoch .. ' ' .. here, 'EX', ttl)
    if seq == 1 then redis.call('DEL', histkey) end
  elseif writer ~= here then
    redis.call('SET', epochkey, epoch .. ' ' .. here, 'EX', ttl)
  end
  local channel
  if kind == 'topic' then
    channel = prefix .. '{topic:' .. stream .. '}:live'
  else
    channel = prefix .. '{u:' .. string.format('%d', #owner) .. ':' .. owner .. '}:live'
  end
  local publish = here ~= '-' and 'SPUBLISH' or 'PUBLISH'
  -- (The event name's pattern needs no escaping.)
  local qepoch = cjson.encode(epoch)
  local head = '{"stream":' .. cjson.encode(stream) .. ',"epoch":' .. qepoch .. ',"seq":'
  local live = '{"user":' .. cjson.encode(owner) .. ',"event":"' .. event .. '","envelope'
  -- Lua hashes every byte of every string it makes (Redis's Lua), so each
  -- text is made once, whole: table.concat over its parts.
  local parts = reply and count > 1 and {'['} or nil -- the reply's
  local one -- the reply: the only envelope
  -- Live: {..."envelope":ENV} for one event. A batch's go together,
  -- {..."envelopes":[ENV,ENV,...]}, each message holding LIVE_BYTES of
  -- envelopes at most (or one envelope, when it is larger).
  local batch, size
  local firsts
  for i = 0, count - 1 do
    local seqs = string.format('%d', seq + i)
    firsts = firsts or seqs
    local env = head .. seqs .. ',"ts":' .. ts .. ',"data":' .. ARGV[first + i] .. '}'
    redis.call('XADD', histkey, 'MAXLEN', '~', keeps, '0-' .. seqs, 'event', event, 'env', env)
    if count == 1 then
      redis.call(publish, channel, live .. '":' .. env .. '}')
      one = env
    else
      if batch and size + #env > LIVE_BYTES then
        send_batch(publish, channel, batch)
        batch = nil
      end
      if batch then
        batch[#batch + 1], batch[#batch + 2], size = ',', env, size + #env
      else
        batch, size = {live .. 's":[', env}, #env
      end
      if parts then parts[2 * i + 2], parts[2 * i + 3] = env, ',' end
    end
  end
  if batch then send_batch(publish, channel, batch) end
  if parts then
    parts[#parts] = ']'
    one = table.concat(parts)
  end
  -- The keys live `ttl` after the last event, give or take a hundredth of it:
  -- refreshed once they have lost that much, not on every event.
  if redis.call('PTTL', seqkey) < ttl * 990 then
    redis.call('EXPIRE', seqkey, ttl)
    redis.call('EXPIRE', epochkey, ttl)
    redis.call('EXPIRE', histkey, ttl)
    if kind == 'job' then redis.call('EXPIRE', reckey, ttl) end
  end
  return qepoch, firsts, ts, one
end

local calls = decode(ARGV[1])
if type(calls) ~= 'table' then
  return redis.error_reply('INVALID ARGV[1] must be a JSON object or an array of them')
end
local data = #ARGV - 1
if data < 1 or data > 256 then
  return redis.error_reply('INVALID ARGV[2..] must be the data of 1 to 256 events')
end

if calls[1] == nil then
  -- One call: all the data is its own.
  if calls['count'] ~= nil and calls['count'] ~= data then
    return redis.error_reply('INVALID count is ' .. tostring(calls['count']) .. ', ARGV[2..] holds ' .. data)
  end
  local epoch, seq, ts, reply = append(calls, 1, 2, data, true)
  if not epoch then return redis.error_reply(seq) end
  return reply
end

-- A group: check its shape whole before storing anything.
local n = #calls
local counts, total = {}, 0
for i = 1, n do
  local call = calls[i]
  local c = type(call) == 'table' and call['count'] or 1
  if type(c) ~= 'number' or c < 1 or c % 1 ~= 0 then
    return redis.error_reply('INVALID call ' .. i .. ': count must be a whole number from 1')
  end
  counts[i], total = c, total + c
end
if #KEYS ~= 4 * n then
  return redis.error_reply('INVALID KEYS must be 4 per call: ' .. 4 * n .. ' for ' .. n .. ' calls, not ' .. #KEYS)
end
if total ~= data then
  return redis.error_reply('INVALID the calls count ' .. total .. ' events, ARGV[2..] holds ' .. data)
end
local out, first = {'['}, 2
for i = 1, n do
  local epoch, seq, ts = append(calls[i], 4 * i - 3, first, counts[i], false)
  if epoch then
    out[2 * i] = '{"epoch":' .. epoch .. ',"seq":' .. seq .. ',"ts":' .. ts .. '}'
  else
    out[2 * i] = '{"error":' .. cjson.encode(seq) .. '}'
  end
  out[2 * i + 1] = ','
  first = first + counts[i]
end
out[#out] = ']'
return table.concat(out)
