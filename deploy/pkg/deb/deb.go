// Package deb builds hearth's .deb from deploy/nfpm.yaml with nfpm.
package deb

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the "deb" packager
)

// Options for Build.
type Options struct {
	Dir     string // the directory of nfpm.yaml; its paths are relative to it
	Binary  string
	Version string
	OutDir  string
}

// Build writes the package into OutDir and returns its path.
func Build(o Options) (string, error) {
	bin, err := filepath.Abs(o.Binary)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("--binary: %w", err)
	}
	env := map[string]string{"HEARTH_VERSION": o.Version}
	cfg, err := nfpm.ParseFileWithEnvMapping(filepath.Join(o.Dir, "nfpm.yaml"), func(k string) string { return env[k] })
	if err != nil {
		return "", fmt.Errorf("nfpm.yaml: %w", err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return "", err
	}
	info = nfpm.WithDefaults(info)
	// Relative sources in nfpm.yaml are relative to its directory.
	for _, c := range info.Contents {
		if c.Destination == "/usr/bin/hearth" {
			c.Source = bin
		} else if c.Source != "" && !filepath.IsAbs(c.Source) {
			c.Source = filepath.Join(o.Dir, c.Source)
		}
	}
	for _, s := range []*string{&info.Scripts.PostInstall, &info.Scripts.PreRemove, &info.Scripts.PostRemove} {
		if *s != "" && !filepath.IsAbs(*s) {
			*s = filepath.Join(o.Dir, *s)
		}
	}
	if err := nfpm.PrepareForPackager(info, "deb"); err != nil {
		return "", fmt.Errorf("nfpm: %w", err)
	}
	pkgr, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(o.OutDir, pkgr.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if err := pkgr.Package(info, f); err != nil {
		f.Close()
		return "", fmt.Errorf("build %s: %w", path, err)
	}
	return path, f.Close()
}
