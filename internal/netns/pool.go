package netns

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// PickPool chooses an agent's address pool among candidates (in order of
// preference) from the host's IPv4 routes: the first that links named with
// prefix (this agent's own slots, left by its previous process) route,
// else the first no other link routes any address of, else candidates[0].
// Two agents on one host therefore take different pools even when their
// preferred one is the same; what stays possible is two agents starting
// at the same instant, before either has a slot.
func PickPool(candidates []netip.Prefix, prefix string) (netip.Prefix, error) {
	if len(candidates) == 0 {
		return netip.Prefix{}, fmt.Errorf("netns: no candidate pool")
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("netns: list routes: %w", err)
	}
	names := map[int]string{}
	name := func(index int) string {
		n, ok := names[index]
		if !ok {
			if l, err := netlink.LinkByIndex(index); err == nil {
				n = l.Attrs().Name
			}
			names[index] = n
		}
		return n
	}
	ours := make([]bool, len(candidates))
	taken := make([]bool, len(candidates))
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		a, ok := netip.AddrFromSlice(r.Dst.IP.To4())
		ones, _ := r.Dst.Mask.Size()
		if !ok || ones == 0 {
			continue // the default route overlaps everything
		}
		dst := netip.PrefixFrom(a, ones)
		for i, c := range candidates {
			if !c.Overlaps(dst) {
				continue
			}
			if strings.HasPrefix(name(r.LinkIndex), prefix) {
				ours[i] = true
			} else {
				taken[i] = true
			}
		}
	}
	for i, c := range candidates {
		if ours[i] {
			return c, nil
		}
	}
	for i, c := range candidates {
		if !taken[i] {
			return c, nil
		}
	}
	return candidates[0], nil
}
