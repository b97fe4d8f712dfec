//go:build vm

package agent

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/hearth-sandbox/hearth/internal/egress"
	"github.com/hearth-sandbox/hearth/internal/netns"
	"github.com/hearth-sandbox/hearth/internal/service"
)

// BenchmarkVMCreatePolicy measures a real sandbox create (cold boot of the
// tiny image until envd is initialised) and its teardown with the egress
// policy off (a netns manager with NoEgressFilter: the slot forwards
// everything), on (the default: closed private ranges, open internet) and
// on with a 40-rule sandbox policy. The variants run interleaved in one
// process, round by round, so the machine's load drifts over all of them
// alike; the ratios to "off" are the result. Run with -benchtime=Nx (N
// rounds of three sandboxes).
func BenchmarkVMCreatePolicy(b *testing.B) {
	on := newVMEnv(b, "tiny")
	offPrefix, offPool := testNetIdentity(os.Getpid(), 1) // the build tests use it too; they do not run with this benchmark
	off := newVMEnvWith(b, func(o *Options) {
		nm, err := netns.NewManager(context.Background(), netns.Config{Prefix: offPrefix, Pool: offPool, NoEgressFilter: true, Logger: o.Logger})
		if err != nil {
			b.Fatal(err)
		}
		o.Net = netAdapter{nm}
	}, "tiny")
	var allow, deny []string
	for i := range 20 {
		allow = append(allow, fmt.Sprintf("198.51.%d.0/24", i))
		deny = append(deny, fmt.Sprintf("203.0.%d.0/24", i))
	}
	rules40, err := egress.New(true, allow, deny)
	if err != nil {
		b.Fatal(err)
	}
	variants := []struct {
		name string
		env  *vmEnv
		pol  egress.Policy
	}{{"off", off, egress.Open()}, {"default", on, egress.Open()}, {"rules40", on, rules40}}
	create := make([][]time.Duration, len(variants))
	destroy := make([][]time.Duration, len(variants))
	ctx := context.Background()
	for round := 0; b.Loop(); round++ {
		// Rotate the order so no variant always follows the same one.
		for k := range variants {
			j := (round + k) % len(variants)
			v := variants[j]
			id := fmt.Sprintf("pol%s%d", v.name, round)
			t0 := time.Now()
			if _, err := v.env.client.CreateSandbox(ctx, service.CreateSandboxRequest{
				SandboxID: id, TemplateID: "tiny", VCPUs: 1, MemoryMB: 256, AccessToken: "tok", Egress: v.pol,
			}); err != nil {
				b.Fatalf("%s: create: %v", v.name, err)
			}
			t1 := time.Now()
			if err := v.env.client.DestroySandbox(ctx, id); err != nil {
				b.Fatalf("%s: destroy: %v", v.name, err)
			}
			create[j] = append(create[j], t1.Sub(t0))
			destroy[j] = append(destroy[j], time.Since(t1))
		}
	}
	median := func(d []time.Duration) float64 {
		s := slices.Clone(d)
		slices.Sort(s)
		return float64(s[len(s)/2].Microseconds()) / 1000
	}
	base, baseDel := median(create[0]), median(destroy[0])
	for j, v := range variants {
		c, d := median(create[j]), median(destroy[j])
		b.ReportMetric(c, v.name+"-create-p50-ms")
		b.ReportMetric(d, v.name+"-destroy-p50-ms")
		if j > 0 {
			b.ReportMetric(c/base, v.name+"/off-create")
			b.ReportMetric((c+d)/(base+baseDel), v.name+"/off-create+destroy")
		}
	}
}
