package agent

import (
	"errors"
	"testing"

	sbx "github.com/hearth-sandbox/hearth/internal/sandbox"
)

// Mounts are checked before anything is made.
func TestCheckVolumes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, false)
	if err := h.m.CreateVolume("vol1"); err != nil {
		t.Fatal(err)
	}
	ok := spec("vol2")
	ok.Volumes = []VolumeMount{{VolumeID: "vol1", Path: "/data"}}
	if err := h.m.checkVolumes(ok); err != nil {
		t.Fatalf("valid mount refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Spec)
		want error
	}{
		{"unknown volume", func(s *Spec) { s.Volumes[0].VolumeID = "nope" }, ErrNotFound},
		{"relative path", func(s *Spec) { s.Volumes[0].Path = "data" }, ErrInvalid},
		{"snapshot template", func(s *Spec) { s.TemplateKind = sbx.KindSnapshot }, ErrInvalid},
	} {
		s := spec("novfs2")
		s.Volumes = []VolumeMount{{VolumeID: "vol1", Path: "/data"}}
		tc.mod(&s)
		if err := h.m.checkVolumes(s); !errors.Is(connectErrKind(err), tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// connectErrKind maps a FieldError to ErrInvalid as the RPC layer does.
func connectErrKind(err error) error {
	var fe *FieldError
	if errors.As(err, &fe) {
		return ErrInvalid
	}
	return err
}
