package netns

import (
	"fmt"
	"net/netip"
)

// allocator hands out /30 blocks of the slot pool by index. It is not
// safe for concurrent use: Manager.mu guards it.
type allocator struct {
	pool netip.Prefix
	used []bool
}

func newAllocator(pool netip.Prefix) (*allocator, error) {
	pool = pool.Masked()
	if !pool.Addr().Is4() {
		return nil, fmt.Errorf("slot pool %s: must be IPv4", pool)
	}
	if pool.Bits() > 30 || pool.Bits() < 14 {
		return nil, fmt.Errorf("slot pool %s: prefix length must be between /14 and /30", pool)
	}
	return &allocator{pool: pool, used: make([]bool, 1<<(30-pool.Bits()))}, nil
}

// take reserves the lowest free index.
func (a *allocator) take() (int, error) {
	for i, u := range a.used {
		if !u {
			a.used[i] = true
			return i, nil
		}
	}
	return 0, fmt.Errorf("slot pool %s exhausted (%d slots)", a.pool, len(a.used))
}

// mark reserves a specific index (re-adoption).
func (a *allocator) mark(i int) error {
	if i < 0 || i >= len(a.used) {
		return fmt.Errorf("slot index %d outside pool %s", i, a.pool)
	}
	if a.used[i] {
		return fmt.Errorf("slot index %d already in use", i)
	}
	a.used[i] = true
	return nil
}

func (a *allocator) release(i int) {
	if i >= 0 && i < len(a.used) {
		a.used[i] = false
	}
}

// addrs returns the host end and the namespace end of slot i's /30.
func (a *allocator) addrs(i int) (host, ns netip.Addr) {
	b := a.pool.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(i) * 4
	mk := func(x uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
	}
	return mk(v + 1), mk(v + 2)
}

// index is the inverse of addrs for the namespace end.
func (a *allocator) index(ns netip.Addr) (int, error) {
	if !a.pool.Contains(ns) {
		return 0, fmt.Errorf("address %s outside pool %s", ns, a.pool)
	}
	b, p := ns.As4(), a.pool.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	base := uint32(p[0])<<24 | uint32(p[1])<<16 | uint32(p[2])<<8 | uint32(p[3])
	off := v - base
	if off%4 != 2 {
		return 0, fmt.Errorf("address %s is not a slot address of pool %s", ns, a.pool)
	}
	return int(off / 4), nil
}
