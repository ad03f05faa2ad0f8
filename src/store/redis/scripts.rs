//! The Lua scripts: each store operation that reads or writes the index is
//! one script, so it is atomic and one round trip.
//!
//! Shared layout (see the module docs for key names): `clock` is an integer
//! string; `idx` a hash from an 8-byte record hash to the generation of its
//! latest invalidation; `idx_t` a sorted set of the same record hashes
//! scored by the server time (ms) of that invalidation; `meta` a hash with
//! `horizon` (the longest entry lifetime stored, ms), `pruned` (the newest
//! generation of any pruned record) and `floor` (entries born before it are
//! invalid: records were dropped early to respect the cap).
//!
//! Scripts use `TIME` (effects replication) and, for `invalidate` and
//! `generation`, shebang flags, so they need Redis 7 or Valkey 7 or later,
//! and Lua's `struct` library, which Redis and Valkey ship.

/// Helpers every writing script shares: server time, number formatting,
/// the clock (seeded when missing) and pruning.
///
/// `KEYS[2]` is the clock, `KEYS[3]` idx, `KEYS[4]` idx_t, `KEYS[5]` meta in
/// every script that includes these.
macro_rules! common_lua {
    () => {
        r#"
local function num(x) return string.format('%.0f', x) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The clock, created when missing. A missing clock means the namespace was
-- lost (a restart without persistence, a flush): generations restart above
-- anything handed out before (server time in microseconds), and every entry
-- born before that point counts as invalidated, since the records that
-- could cover it are gone. `seeded` says (1) that this call created it.
local seeded = 0
local function clock()
  local c = redis.call('GET', KEYS[2])
  -- The highest generation ever handed out: a clock set back (a restored
  -- snapshot of it, a stray SET) is moved forward again.
  local high = tonumber(redis.call('HGET', KEYS[5], 'high') or '0')
  if c and tonumber(c) >= high then return tonumber(c) end
  if c or high > 0 then
    redis.call('SET', KEYS[2], num(high))
    return high
  end
  local t = redis.call('TIME')
  local seed = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[2], num(seed))
  redis.call('HSET', KEYS[5], 'floor', num(seed), 'pruned', num(seed))
  seeded = 1
  return seed
end

local function meta(field)
  return tonumber(redis.call('HGET', KEYS[5], field) or '0')
end

-- Drops records older than the horizon (at most `batch` of them), then the
-- oldest records over `cap`, raising the floor to the newest generation
-- dropped that way. Mirrors the in-memory index's pruning.
local function prune(now, cap, batch)
  local horizon = meta('horizon')
  local pruned = meta('pruned')
  local floor = meta('floor')
  local changed = false
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. num(now - horizon),
    'LIMIT', 0, batch)
  for _, h in ipairs(old) do
    local g = tonumber(redis.call('HGET', KEYS[3], h) or '0')
    redis.call('HDEL', KEYS[3], h)
    redis.call('ZREM', KEYS[4], h)
    if g > pruned then pruned = g end
    changed = true
  end
  local over = redis.call('ZCARD', KEYS[4]) - cap
  if over > 0 then
    local popped = redis.call('ZPOPMIN', KEYS[4], over)
    for i = 1, #popped, 2 do
      local g = tonumber(redis.call('HGET', KEYS[3], popped[i]) or '0')
      redis.call('HDEL', KEYS[3], popped[i])
      if g > floor then floor = g end
      if g > pruned then pruned = g end
    end
    redis.call('HSET', KEYS[5], 'floor', num(floor))
    changed = true
  end
  if changed then redis.call('HSET', KEYS[5], 'pruned', num(pruned)) end
end
"#
    };
}

/// `get`: KEYS = entry, clock, idx, idx_t, meta. No ARGV.
///
/// Returns `{0}` for a miss, `{1, value}` for an entry no record covers,
/// `{2}` for an entry a record (or the floor) covers, which is deleted, and
/// `{3}` for a value that cannot be judged (an unreadable prefix, more
/// hashes than an entry carries, a birth after the clock), also deleted.
/// Only reads the prefix: version byte, born (u64 BE), hash count (u16
/// BE), the hashes (8 bytes each, used as `idx` fields as they are).
pub(crate) const GET: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return {0} end
local len = string.len(v)
if len < 11 or string.byte(v, 1) ~= 3 then
  redis.call('DEL', KEYS[1])
  return {3}
end
local hi, lo, n = struct.unpack('>I4I4I2', v, 2)
local born = hi * 4294967296 + lo
-- More hashes than an entry may carry (1024), a value too short for
-- them, or a birth after the clock's (not born here: the clock only
-- moves forward): a value that cannot be judged, dropped.
local c = tonumber(redis.call('GET', KEYS[2]) or '0')
local high = tonumber(redis.call('HGET', KEYS[5], 'high') or '0')
if high > c then c = high end
if n > 1024 or len < 11 + 8 * n or born > c then
  redis.call('DEL', KEYS[1])
  return {3}
end
if born < tonumber(redis.call('HGET', KEYS[5], 'floor') or '0') then
  redis.call('DEL', KEYS[1])
  return {2}
end
if n > 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  local fields = {}
  for i = 0, n - 1 do
    fields[i + 1] = string.sub(v, 12 + 8 * i, 19 + 8 * i)
  end
  local gens = redis.call('HMGET', KEYS[3], unpack(fields))
  for i = 1, n do
    local g = gens[i]
    if g and tonumber(g) > born then
      redis.call('DEL', KEYS[1])
      return {2}
    end
  end
end
return {1, v}
"#;

/// `put`: KEYS = entry, clock, idx, idx_t, meta; ARGV = value, px (ms),
/// lifetime (ms, freshness plus grace), born, cap, batch.
///
/// Raises the horizon to the entry's lifetime, prunes, and stores the value
/// with `PX` unless a record that could have covered it was pruned (its
/// born is below `pruned`). Returns `{1, seeded}` when stored, `{0,
/// seeded}` when refused (`seeded`: 1 when this call found the namespace
/// empty and started its clock).
pub(crate) const PUT: &str = concat!(
    common_lua!(),
    r#"
local c = clock()
-- A birth after the clock was not handed out here.
if tonumber(ARGV[4]) > c then return {0, seeded} end
local lifetime = tonumber(ARGV[3])
if lifetime > meta('horizon') then redis.call('HSET', KEYS[5], 'horizon', num(lifetime)) end
prune(now_ms(), tonumber(ARGV[5]), tonumber(ARGV[6]))
if tonumber(ARGV[4]) < meta('pruned') then return {0, seeded} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, seeded}
"#
);

/// `invalidate`: KEYS = (unused), clock, idx, idx_t, meta; ARGV = cap,
/// batch, channel, then one 8-byte record hash per target.
///
/// Ticks the clock, records every hash at the new generation, prunes,
/// publishes `generation (u64 BE) .. hashes` on the channel for near caches,
/// and returns `{generation, seeded}`.
///
/// Flagged `allow-oom` (Redis 7): a flush must be recorded even when Redis
/// is full and refuses every other write (`maxmemory-policy noeviction`).
pub(crate) const INVALIDATE: &str = concat!(
    "#!lua flags=allow-oom\n",
    common_lua!(),
    r#"
local g = clock() + 1
redis.call('SET', KEYS[2], num(g))
redis.call('HSET', KEYS[5], 'high', num(g))
local now = now_ms()
for i = 4, #ARGV do
  -- A record never goes back to a lower generation.
  local old = tonumber(redis.call('HGET', KEYS[3], ARGV[i]) or '0')
  if g > old then
    redis.call('HSET', KEYS[3], ARGV[i], num(g))
  end
  redis.call('ZADD', KEYS[4], num(now), ARGV[i])
end
prune(now, tonumber(ARGV[1]), tonumber(ARGV[2]))
local msg = struct.pack('>I4I4', math.floor(g / 4294967296), g % 4294967296)
redis.call('PUBLISH', ARGV[3], msg .. table.concat(ARGV, '', 4))
return {g, seeded}
"#
);

/// `generation`: KEYS = (unused), clock, idx, idx_t, meta. Returns
/// `{clock, seeded}`, seeding the clock when missing.
/// Flagged `allow-oom` like `invalidate`: a read whose origin call begins
/// must learn its generation when Redis is full.
pub(crate) const GENERATION: &str = concat!(
    "#!lua flags=allow-oom\n",
    common_lua!(),
    "\nlocal c = clock()\nreturn {c, seeded}\n"
);

/// Every script, to load them all at once.
pub(crate) const ALL: [&str; 4] = [GET, PUT, INVALIDATE, GENERATION];

#[cfg(test)]
mod tests {
    #[test]
    fn the_lookup_script_reads_the_codecs_version() {
        let check = format!("string.byte(v, 1) ~= {} then", super::super::codec::VERSION);
        assert!(super::GET.contains(&check), "GET checks another version");
    }
}
