package sandbox

import (
	"errors"
	"testing"
)

func TestTablesCoverEveryState(t *testing.T) {
	for name, tab := range map[string]Table{"host": Host(), "control plane": ControlPlane()} {
		for _, s := range States() {
			if _, ok := tab[s]; !ok {
				t.Errorf("%s table has no row for %s", name, s)
			}
		}
		for from, tos := range tab {
			for _, to := range tos {
				if to == from {
					t.Errorf("%s table: %s → itself", name, from)
				}
			}
		}
	}
}

// The control plane records only moves a host can make, except the
// reconciler's verdicts on sandboxes a host no longer has or reports in
// another settled state.
func TestControlPlaneWithinHost(t *testing.T) {
	host, cp, rec := Host(), ControlPlane(), Reconciler()
	for from, tos := range cp {
		for _, to := range tos {
			overtaking := from.Transitional() && to == StateStopping // the host destroys after the operation
			if !host.Allows(from, to) && !overtaking {
				t.Errorf("control plane moves %s → %s, which no host makes", from, to)
			}
		}
	}
	for _, tc := range []struct {
		from, to State
		want     bool
	}{
		{StateRunning, StateStopped, true},
		{StateCreating, StateStopped, true},
		{StatePausing, StateError, true},
		{StatePaused, StateStopped, false}, // paused sandboxes are expected absent
		{StateRunning, StateError, true},   // the host reports its VM died
		{StatePausing, StatePaused, true},  // a pause whose control plane crashed
		{StateResuming, StateRunning, true},
		{StateError, StateRunning, false}, // error is an operator's to clear
		{StateStopped, StateRunning, false},
	} {
		if got := rec.Allows(tc.from, tc.to); got != tc.want {
			t.Errorf("reconciler %s → %s: %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
	if host.Allows(StateRunning, StateStopped) || cp.Allows(StateRunning, StateStopped) {
		t.Error("running → stopped must be the reconciler's alone")
	}
}

func TestShapeValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shape Shape
		lim   Limits
		field string // "" = valid
	}{
		{"public smallest", Shape{1, 128, 1024}, Public(), ""},
		{"public largest", Shape{16, 65536, 1048576}, Public(), ""},
		{"public vcpus 0", Shape{0, 128, 1024}, Public(), "vcpus"},
		{"public vcpus 17", Shape{17, 128, 1024}, Public(), "vcpus"},
		{"public memory 127", Shape{1, 127, 1024}, Public(), "memory_mb"},
		{"public disk 1023", Shape{1, 128, 1023}, Public(), "disk_size_mb"},
		{"public disk 1048577", Shape{1, 128, 1048577}, Public(), "disk_size_mb"},
		{"public default disk", Shape{VCPUs: 1, MemoryMB: 128}.WithDefaults(), Public(), ""},
		{"host small disk", Shape{1, 64, 128}, HostLimits(), ""},
		{"host vcpus 64", Shape{64, 64, 1}, HostLimits(), ""},
		{"host vcpus 65", Shape{65, 64, 1}, HostLimits(), "vcpus"},
		{"host memory 63", Shape{1, 63, 1}, HostLimits(), "memory_mb"},
		{"host disk -1", Shape{1, 64, -1}, HostLimits(), "disk_size_mb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.shape.Validate(tc.lim)
			var fe *FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("%+v: %v", tc.shape, err)
			case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
				t.Fatalf("%+v: %v, want a field error on %s", tc.shape, err, tc.field)
			}
		})
	}
	if got := (Shape{}).WithDefaults().DiskSizeMB; got != DefaultDiskSizeMB {
		t.Errorf("default disk %d", got)
	}
}
