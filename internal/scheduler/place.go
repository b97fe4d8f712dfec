// Package scheduler places sandboxes on hosts.
//
// Place is a pure function over host snapshots; Pool adapts it to the
// service's HostPool over the store's host rows, with per-host clients
// created once and cached.
//
// # Score
//
// Among the hosts that can take a sandbox, Place picks the one with the
// lowest load after placing it:
//
//	load = (cpuWeight·cpu + memWeight·mem) / (cpuWeight + memWeight)
//	cpu  = (UsedVCPUs + req.VCPUs) / (VCPUs · CPUOvercommit)
//	mem  = (UsedMemoryMB + req.MemoryMB) / (MemoryMB · MemoryOvercommit)
//
// (weights 1 and 1 by default), so a host twice as big counts as half as
// loaded, and memory, which cannot be overcommitted safely, weighs as much
// as vCPUs. Ties go to the host with fewer sandboxes, then to the smaller
// host ID: decisions are deterministic.
//
// # Capacity
//
// A host fits when every dimension stays within capacity × overcommit:
// vCPUs (default 4×), memory (1×), disk (1×; skipped for hosts reporting no
// disk). Hosts that have not reported capacity, and hosts not ready
// (unreachable, draining), never fit.
//
// # Affinity
//
// Request.RequiredHost (resume: the host holding the paused sandbox's
// snapshot) is the only candidate. Request.TemplateHosts (the hosts holding
// a snapshot or built template's files) are preferred: the least loaded of
// them that fits. When none fits (full, draining, unreachable), the best
// other host is chosen, and the caller copies the template there from a
// holder; a template whose holders are all unreachable or gone cannot be
// placed.
package scheduler

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hearth-sandbox/hearth/internal/store"
)

// Candidate is a host as placement sees it.
type Candidate struct {
	ID           string
	Status       store.HostStatus
	VCPUs        int // capacity
	MemoryMB     int
	DiskMB       int
	UsedVCPUs    int
	UsedMemoryMB int
	UsedDiskMB   int
	SandboxCount int
}

// FromHost makes a Candidate of a store row.
func FromHost(h store.Host) Candidate {
	return Candidate{ID: h.ID, Status: h.Status, VCPUs: h.VCPUs, MemoryMB: h.MemoryMB, DiskMB: h.DiskMB,
		UsedVCPUs: h.UsedVCPUs, UsedMemoryMB: h.UsedMemoryMB, UsedDiskMB: h.UsedDiskMB, SandboxCount: h.SandboxCount}
}

// Request is one sandbox to place.
type Request struct {
	VCPUs      int
	MemoryMB   int
	DiskMB     int
	TemplateID string // for messages
	// TemplateHosts hold the template's files (none for base templates,
	// which every host has).
	TemplateHosts []string
	// RequiredHost, when set, is the only acceptable host (resume).
	RequiredHost string
}

// Policy holds the overcommit factors and score weights. Zero values take
// the defaults (DefaultPolicy).
type Policy struct {
	CPUOvercommit    float64 // default 4
	MemoryOvercommit float64 // default 1
	DiskOvercommit   float64 // default 1
	CPUWeight        float64 // default 1
	MemoryWeight     float64 // default 1
}

// DefaultPolicy is the zero Policy with its defaults filled in.
func DefaultPolicy() Policy { return Policy{}.withDefaults() }

func (p Policy) withDefaults() Policy {
	def := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&p.CPUOvercommit, 4)
	def(&p.MemoryOvercommit, 1)
	def(&p.DiskOvercommit, 1)
	def(&p.CPUWeight, 1)
	def(&p.MemoryWeight, 1)
	return p
}

// Decision is where a sandbox goes.
type Decision struct {
	HostID string
	Load   float64 // the host's score after placement
}

// ErrNoCapacity: no candidate can take the request. Wrapped with details.
var ErrNoCapacity = errors.New("no host can take the sandbox")

// Place chooses a host for req among hosts (see the package comment).
func Place(hosts []Candidate, req Request, p Policy) (Decision, error) {
	p = p.withDefaults()
	if req.RequiredHost != "" {
		return placeOn(hosts, req.RequiredHost, req, p, "the sandbox's snapshot")
	}
	if len(req.TemplateHosts) == 0 {
		return best(hosts, req, p)
	}
	var holders, others []Candidate
	for _, c := range hosts {
		if slices.Contains(req.TemplateHosts, c.ID) {
			holders = append(holders, c)
		} else {
			others = append(others, c)
		}
	}
	d, err := best(holders, req, p)
	if err == nil {
		return d, nil
	}
	reason := strings.TrimPrefix(err.Error(), ErrNoCapacity.Error()+": ")
	if len(holders) == 0 {
		reason = "are not registered"
	}
	canSend := slices.ContainsFunc(holders, func(c Candidate) bool {
		return c.Status == store.HostReady || c.Status == store.HostDraining
	})
	if !canSend {
		return Decision{}, fmt.Errorf("%w: the hosts holding template %s (%s) %s; none can send a copy", ErrNoCapacity, req.TemplateID, strings.Join(req.TemplateHosts, ", "), reason)
	}
	alt, altErr := best(others, req, p)
	if altErr != nil {
		return Decision{}, fmt.Errorf("%w: the hosts holding template %s cannot take it (%s); no other host has room either (%s)",
			ErrNoCapacity, req.TemplateID, reason, strings.TrimPrefix(altErr.Error(), ErrNoCapacity.Error()+": "))
	}
	return alt, nil
}

func find(hosts []Candidate, id string) (Candidate, bool) {
	for _, c := range hosts {
		if c.ID == id {
			return c, true
		}
	}
	return Candidate{}, false
}

// placeOn accepts only host id, which holds what.
func placeOn(hosts []Candidate, id string, req Request, p Policy, what string) (Decision, error) {
	c, ok := find(hosts, id)
	if !ok {
		return Decision{}, fmt.Errorf("%w: host %s holding %s is not registered", ErrNoCapacity, id, what)
	}
	if why := refuse(c, req, p); why != "" {
		return Decision{}, fmt.Errorf("%w: host %s holding %s %s", ErrNoCapacity, id, what, why)
	}
	return Decision{HostID: id, Load: load(c, req, p)}, nil
}

// best is the least-loaded fitting host.
func best(hosts []Candidate, req Request, p Policy) (Decision, error) {
	var (
		chosen *Candidate
		score  float64
		why    = map[string]int{}
	)
	for i := range hosts {
		c := &hosts[i]
		if r := refuse(*c, req, p); r != "" {
			why[r]++
			continue
		}
		s := load(*c, req, p)
		if chosen == nil || s < score ||
			(s == score && (c.SandboxCount < chosen.SandboxCount ||
				(c.SandboxCount == chosen.SandboxCount && c.ID < chosen.ID))) {
			chosen, score = c, s
		}
	}
	if chosen == nil {
		return Decision{}, fmt.Errorf("%w: %s", ErrNoCapacity, summarize(why))
	}
	return Decision{HostID: chosen.ID, Load: score}, nil
}

func summarize(why map[string]int) string {
	if len(why) == 0 {
		return "no hosts registered"
	}
	parts := make([]string, 0, len(why))
	for r, n := range why {
		parts = append(parts, fmt.Sprintf("%d %s", n, r))
	}
	slices.Sort(parts)
	return "hosts: " + strings.Join(parts, ", ")
}

// refuse says why c cannot take req, or "".
func refuse(c Candidate, req Request, p Policy) string {
	switch {
	case c.Status != store.HostReady:
		return "is " + string(c.Status)
	case c.VCPUs <= 0 || c.MemoryMB <= 0:
		return "has not reported capacity"
	case float64(c.UsedVCPUs+req.VCPUs) > float64(c.VCPUs)*p.CPUOvercommit:
		return "lacks vCPUs"
	case float64(c.UsedMemoryMB+req.MemoryMB) > float64(c.MemoryMB)*p.MemoryOvercommit:
		return "lacks memory"
	case c.DiskMB > 0 && float64(c.UsedDiskMB+req.DiskMB) > float64(c.DiskMB)*p.DiskOvercommit:
		return "lacks disk"
	}
	return ""
}

func load(c Candidate, req Request, p Policy) float64 {
	cpu := float64(c.UsedVCPUs+req.VCPUs) / (float64(c.VCPUs) * p.CPUOvercommit)
	mem := float64(c.UsedMemoryMB+req.MemoryMB) / (float64(c.MemoryMB) * p.MemoryOvercommit)
	return (p.CPUWeight*cpu + p.MemoryWeight*mem) / (p.CPUWeight + p.MemoryWeight)
}
