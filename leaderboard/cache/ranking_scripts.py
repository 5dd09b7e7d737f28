"""The ranking's Lua scripts (each atomic in Redis), used by :mod:`leaderboard.cache.ranking`,
which says what they keep true: the tie-break encoding, the top-10 change detection.
"""

from __future__ import annotations

# What every script that changes a ranking ends with: read the top 10 and, when its
# membership differs from the last one published (or ``force``: a season starts), bump ``seq``,
# store and publish the new message. Returns the published seq or 0.
ANNOUNCE = """
local function membership_of(scores)
  local top = redis.call('ZREVRANGE', scores, 0, 9, 'WITHSCORES')
  local ids = {}
  for i = 1, #top, 2 do ids[#ids + 1] = top[i] end
  table.sort(ids)
  return top, table.concat(ids, '\\n')
end

local function announce(scores, top10, channel, board, season, unit, force)
  local top, membership = membership_of(scores)
  local published = redis.call('HEXISTS', top10, 'seq') == 1
  -- Unchanged membership publishes nothing, except the very first state (an empty board
  -- has one too: broadcasters then hand viewers its seq, and the first real change is
  -- seq+1 for them, not a gap from 0 to the clock) and a reset.
  if not force and published
      and membership == (redis.call('HGET', top10, 'members') or '') then
    return 0
  end
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  if not published then
    -- seq starts from the clock, so a Redis that lost its data never goes back in seq
    redis.call('HSET', top10, 'seq', now_ms)
  end
  local seq = redis.call('HINCRBY', top10, 'seq', 1)
  local entries = {}
  for i = 1, #top, 2 do
    local score = math.floor(tonumber(top[i + 1]) / unit)
    entries[#entries + 1] = string.format('{"rank":%d,"userId":%s,"score":%d}',
      (i + 1) / 2, cjson.encode(top[i]), score)
  end
  local message = string.format(
    '{"type":"top10","seq":%d,"board":%s,"season":%d,"top":[%s],"ts":%d}',
    seq, cjson.encode(board), season, table.concat(entries, ','), now_ms)
  redis.call('HSET', top10, 'members', membership, 'message', message)
  redis.call('PUBLISH', channel, message)
  return seq
end
"""

# Every write of a user's standing: the newest wins. A composite carries the standing's
# ``reached_seq`` (its low bits), which PostgreSQL takes while the row is locked, so per user and
# board a later commit has a higher seq (db.awards). An entry is replaced only by a standing
# with a higher seq, whether the score goes up or down (an adjustment, a correction), and a
# delayed older standing (a completion recorded late, a rebuild's or the reconciliation's read
# from before the change) changes nothing. Standings of one seq differ only when one award
# statement counted several completions of the user: each answer carries the score after it,
# all with the statement's seq, and the highest (the last) is the row's. Returns whether the
# entry changed.
PUT = """
local function seq_of(composite, unit)
  return unit - 1 - (composite % unit)
end

local function put(scores, user, composite, unit)
  local held = redis.call('ZSCORE', scores, user)
  if held then
    held = tonumber(held)
    local new = tonumber(composite)
    local old_seq, new_seq = seq_of(held, unit), seq_of(new, unit)
    if old_seq > new_seq or (old_seq == new_seq and held >= new) then
      return false
    end
  end
  redis.call('ZADD', scores, composite, user)
  return true
end
"""

# One call updates the user's entry on every board a completion counted for, and publishes
# each board whose top-10 membership changed.
# KEYS: scores_1, top10_1, scores_2, top10_2, ..., blocked.  ARGV: user ('' = no update), seq
# unit, then per board: channel, composite, season, board id.
# Returns {rank on board 1 (0-based) or false, then per board: published seq or 0, ready 0/1}.
#
# Seasons: the hash remembers the season its sorted set holds. An update for a later season
# is the reset: the old season's entries are dropped (archived seasons are read from
# PostgreSQL), the new season starts as complete ("ready") as the old one was, and its top 10
# (empty, or the first few users) is published even if that membership equals the last one.
# An update for an earlier season (committed just before the reset, recorded just after)
# changes nothing here.
#
# Moderation: a user in ``blocked`` (banned or erased; members are SHA-1 hashes of user ids,
# so the set names nobody) is never added: a completion recorded after the ban removed the
# user cannot bring them back.
UPDATE = (
    ANNOUNCE
    + PUT
    + """
local user, unit = ARGV[1], tonumber(ARGV[2])
local boards = (#KEYS - 1) / 2
if user ~= '' and redis.call('SISMEMBER', KEYS[#KEYS], redis.sha1hex(user)) == 1 then
  user = ''
end
local rank = false
local out = {false}
for b = 1, boards do
  local scores, top10 = KEYS[2 * b - 1], KEYS[2 * b]
  local a = 2 + 4 * (b - 1)
  local channel, composite, season, board = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]),
    ARGV[a + 4]
  local current = tonumber(redis.call('HGET', top10, 'season') or '0')
  if season < current then
    out[#out + 1] = 0
    out[#out + 1] = 1
  else
    local reset = current > 0 and season > current
    if reset then
      -- The new season starts empty, as complete as the old one was: a ranking marked
      -- incomplete (a record was missed) stays so until a rebuild of the new season.
      redis.call('DEL', scores)
    end
    if season ~= current then redis.call('HSET', top10, 'season', season) end
    local ready = redis.call('HGET', top10, 'ranking') == 'ready' and 1 or 0
    local published = redis.call('HEXISTS', top10, 'seq') == 1
    -- A complete ranking of this season whose last published top 10 is its current one
    -- (this script is then the only writer): only this user's entry changes, so the
    -- membership changes only if the user enters or leaves the top 10 now.
    local exact = user ~= '' and ready == 1 and published and season == current
    local was_in = false
    if exact then
      local before = redis.call('ZREVRANK', scores, user)
      was_in = before ~= false and before < 10
    end
    local is_in = false
    if user ~= '' then
      put(scores, user, composite, unit)
      if b == 1 or exact then
        local after = redis.call('ZREVRANK', scores, user)
        if b == 1 then rank = after end
        is_in = after < 10
      end
    end
    local seq = 0
    if not (exact and was_in == is_in) then
      seq = announce(scores, top10, channel, board, season, unit, reset or not published)
    end
    out[#out + 1] = seq
    out[#out + 1] = ready
  end
end
out[1] = rank
return out
"""
)

# An admin's change to a user's standing, on every board at once, with the broadcasts it
# causes. KEYS: scores_1, top10_1, ..., blocked.  ARGV: user, seq unit, mode, then per board:
# channel, composite ('' = not on this board), season, board id.
#   mode 'block': the user is added to ``blocked`` and removed from every ranking (a ban, an
#     erasure); 'set': removed from ``blocked`` and given the composites (an unban, an
#     adjustment: a score may go down) on the boards whose season they are of, unless a newer
#     standing is there already (a completion committed after this action and recorded first).
# Returns the published seq or 0, per board.
MODERATE = (
    ANNOUNCE
    + PUT
    + """
local user, unit, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local hashed = redis.sha1hex(user)
if mode == 'block' then
  redis.call('SADD', KEYS[#KEYS], hashed)
else
  redis.call('SREM', KEYS[#KEYS], hashed)
end
local out = {}
for b = 1, (#KEYS - 1) / 2 do
  local scores, top10 = KEYS[2 * b - 1], KEYS[2 * b]
  local a = 3 + 4 * (b - 1)
  local channel, composite, season, board = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3]),
    ARGV[a + 4]
  local current = tonumber(redis.call('HGET', top10, 'season') or '0')
  local seq = 0
  if mode == 'block' then
    if redis.call('ZREM', scores, user) == 1 then
      seq = announce(scores, top10, channel, board, current, unit, false)
    end
  elseif composite ~= '' and season == current then
    if put(scores, user, composite, unit) then
      seq = announce(scores, top10, channel, board, current, unit, false)
    end
  end
  out[#out + 1] = seq
end
return out
"""
)

# A rebuild's batch read from PostgreSQL. KEYS: scores, blocked.  ARGV: unit, then user,
# composite, user, composite, ...  Blocked users are left out (a ban that committed after the
# batch was read); an entry newer than the batch's read stays. Returns how many changed.
LOAD = (
    PUT
    + """
local unit = tonumber(ARGV[1])
local check = redis.call('SCARD', KEYS[2]) > 0
local changed = 0
for i = 2, #ARGV, 2 do
  local user = ARGV[i]
  if not (check and redis.call('SISMEMBER', KEYS[2], redis.sha1hex(user)) == 1) then
    if put(KEYS[1], user, ARGV[i + 1], unit) then changed = changed + 1 end
  end
end
return changed
"""
)

# KEYS: scores, top10.  ARGV: first, last (0-based ranks).
# Returns {0} (not ready) or {1, season, {member, composite, member, composite, ...}, total}.
TOP = """
if redis.call('HGET', KEYS[2], 'ranking') ~= 'ready' then return {0} end
return {1, tonumber(redis.call('HGET', KEYS[2], 'season') or '1'),
  redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES'), redis.call('ZCARD', KEYS[1])}
"""

# KEYS: scores, top10.  ARGV: user, radius.
# Returns {0} (not ready), {1, season} (unknown user) or
# {1, season, rank0, first0, {member, composite, ...}, total}.
USER = """
if redis.call('HGET', KEYS[2], 'ranking') ~= 'ready' then return {0} end
local season = tonumber(redis.call('HGET', KEYS[2], 'season') or '1')
local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
if not rank then return {1, season} end
local first = math.max(rank - tonumber(ARGV[2]), 0)
return {1, season, rank, first, redis.call('ZREVRANGE', KEYS[1], first,
  rank + tonumber(ARGV[2]), 'WITHSCORES'), redis.call('ZCARD', KEYS[1])}
"""

# KEYS: scores, top10.  ARGV: users (a list of friends, up to 100).
# Returns {0} (not ready) or {1, season, total, {member, rank0, composite, ...}}: of the users
# who have a rank, in the order asked.
USERS = """
if redis.call('HGET', KEYS[2], 'ranking') ~= 'ready' then return {0} end
local found = {}
for i = 1, #ARGV do
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[i])
  if rank then
    found[#found + 1] = ARGV[i]
    found[#found + 1] = rank
    found[#found + 1] = redis.call('ZSCORE', KEYS[1], ARGV[i])
  end
end
return {1, tonumber(redis.call('HGET', KEYS[2], 'season') or '1'),
  redis.call('ZCARD', KEYS[1]), found}
"""
