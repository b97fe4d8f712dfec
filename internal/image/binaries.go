package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// modulePath identifies hearth's source tree when looking for it.
const modulePath = "github.com/hearth-sandbox/hearth"

// FindSourceDir walks up from dir to the hearth module root (go.mod).
func FindSourceDir(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the hearth source tree: pass the init and envd binaries explicitly")
		}
		dir = parent
	}
}

// goBuildStatic builds a static binary of ./<pkg> in srcDir. -trimpath and
// an empty build ID make the output depend on the sources only, so an
// unchanged tree hashes the same and the images are reused.
func goBuildStatic(ctx context.Context, srcDir, pkg, out string) error {
	if _, err := os.Stat(filepath.Join(srcDir, pkg)); err != nil {
		return fmt.Errorf("%s: %w", pkg, err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, "./"+pkg)
	cmd.Dir = srcDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./%s: %w: %s", pkg, err, bytes.TrimSpace(b))
	}
	return nil
}

// guestBinaries are the two programs installed in every image.
type guestBinaries struct {
	init, envd []byte
	initSum    string
	envdSum    string
}

func loadGuestBinaries(ctx context.Context, o Options, tmp string, p *progress) (guestBinaries, error) {
	var g guestBinaries
	initPath, envdPath := o.InitBinary, o.EnvdBinary
	if initPath == "" || envdPath == "" {
		src := o.SourceDir
		if src == "" {
			var err error
			if src, err = FindSourceDir("."); err != nil {
				return g, err
			}
		}
		if initPath == "" {
			initPath = filepath.Join(tmp, "hearth-init")
			p.logf("go build ./cmd/hearth-init")
			if err := goBuildStatic(ctx, src, "cmd/hearth-init", initPath); err != nil {
				return g, err
			}
		}
		if envdPath == "" {
			envdPath = filepath.Join(tmp, "envd")
			p.logf("go build ./cmd/envd")
			if err := goBuildStatic(ctx, src, "cmd/envd", envdPath); err != nil {
				return g, err
			}
		}
	}
	var err error
	if g.init, err = os.ReadFile(initPath); err != nil {
		return g, fmt.Errorf("init binary: %w", err)
	}
	if g.envd, err = os.ReadFile(envdPath); err != nil {
		return g, fmt.Errorf("envd binary: %w", err)
	}
	g.initSum, g.envdSum = sha(g.init), sha(g.envd)
	return g, nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// inputsHash hashes the parts that determine an artefact.
func inputsHash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s\n", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}
