package bridge

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// Flow table defaults.
const (
	// DefaultMaxFlows bounds the table: 65536 flows of about 100 bytes
	// each is a few MiB, and more flows than that from one sandbox is a
	// scan, whose oldest entries may as well be decided again.
	DefaultMaxFlows = 1 << 16
	// DefaultIdleTimeout is how long a flow keeps its verdict without a
	// frame: Linux's conntrack keeps an established TCP flow for days but
	// an unreplied one for seconds; five minutes is nf_conntrack's
	// udp_timeout_stream (120 s) with room for idle TCP keepalives to come
	// back before being decided again.
	DefaultIdleTimeout = 5 * time.Minute
	// flowShards spreads the table over independent locks: one per
	// delivering goroutine would do, more costs nothing.
	flowShards = 64
)

// flowEntry is a flow's verdict and when it last carried a frame.
type flowEntry struct {
	allow bool
	last  atomic.Int64 // unix nanoseconds
}

type flowShard struct {
	mu sync.RWMutex
	m  map[Flow]*flowEntry // guarded by mu
}

// flowTable keeps the verdict of each flow, keyed by the flow as the
// sandbox opened it (Egress). It is bounded: a shard at its share of
// maxFlows first drops its expired entries and, if still full, its oldest
// one. Safe for concurrent use.
type flowTable struct {
	shards   [flowShards]flowShard
	perShard int
	idle     int64 // nanoseconds
	seed     maphash.Seed
	now      func() time.Time

	active  atomic.Int64
	evicted atomic.Uint64
}

func newFlowTable(maxFlows int, idle time.Duration, now func() time.Time) *flowTable {
	t := &flowTable{
		perShard: max(1, maxFlows/flowShards),
		idle:     int64(idle),
		seed:     maphash.MakeSeed(),
		now:      now,
	}
	for i := range t.shards {
		t.shards[i].m = make(map[Flow]*flowEntry)
	}
	return t
}

func (t *flowTable) shard(f Flow) *flowShard {
	return &t.shards[maphash.Comparable(t.seed, f)%flowShards]
}

// lookup returns the verdict of f and whether it has a live one, and marks
// f as active now.
func (t *flowTable) lookup(f Flow) (allow, ok bool) {
	now := t.now().UnixNano()
	s := t.shard(f)
	s.mu.RLock()
	e := s.m[f]
	s.mu.RUnlock()
	if e == nil || now-e.last.Load() > t.idle {
		return false, false
	}
	e.last.Store(now)
	return e.allow, true
}

// insert records f's verdict.
func (t *flowTable) insert(f Flow, allow bool) {
	now := t.now().UnixNano()
	s := t.shard(f)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[f]; ok {
		// Another goroutine decided it too, or it had expired.
		e.allow = allow
		e.last.Store(now)
		return
	}
	if len(s.m) >= t.perShard {
		t.sweepLocked(s, now)
	}
	e := &flowEntry{allow: allow}
	e.last.Store(now)
	s.m[f] = e
	t.active.Add(1)
}

// sweepLocked drops s's expired entries, or its oldest when none has
// expired.
func (t *flowTable) sweepLocked(s *flowShard, now int64) {
	var oldest Flow
	oldestAt := int64(-1)
	dropped := 0
	for f, e := range s.m {
		at := e.last.Load()
		if now-at > t.idle {
			delete(s.m, f)
			dropped++
			continue
		}
		if oldestAt < 0 || at < oldestAt {
			oldest, oldestAt = f, at
		}
	}
	if dropped == 0 && oldestAt >= 0 {
		delete(s.m, oldest)
		dropped = 1
	}
	t.active.Add(-int64(dropped))
	t.evicted.Add(uint64(dropped))
}

// len returns the number of entries, expired ones not yet swept included.
func (t *flowTable) len() int { return int(t.active.Load()) }
