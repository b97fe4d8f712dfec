// Package buildcontext packs a directory tree as a tar stream: a build
// context for `hearth template build` (gzipped, .dockerignore honoured)
// and, in tests, an OCI image layer. One tar walker for both.
package buildcontext

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// IgnoreFile is the file whose patterns leave paths out of a context, with
// Docker's syntax and rules (github.com/moby/patternmatcher).
const IgnoreFile = ".dockerignore"

// Decision is what WriteTar does with a path.
type Decision int

const (
	Include Decision = iota
	// Leave the path out (and, for a directory, all it holds).
	Leave
	// Descend leaves a directory's own entry out but walks into it: an
	// exclusion pattern may bring back something inside.
	Descend
)

// Skip decides what happens to the path rel (slash-separated, relative to
// the tree's root).
type Skip func(rel string, dir bool) (Decision, error)

// WriteTar writes the tree at dir to w as a tar stream (no compression):
// regular files, directories and symlinks with their modes, owners and
// times; other file types are left out. skip may be nil. A skipped
// directory is not descended into.
func WriteTar(dir string, w io.Writer, skip Skip) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if skip != nil {
			dec, err := skip(rel, d.IsDir())
			if err != nil {
				return err
			}
			switch {
			case dec == Leave && d.IsDir():
				return filepath.SkipDir
			case dec == Leave || dec == Descend:
				return nil
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		} else if !fi.Mode().IsRegular() && !fi.IsDir() {
			return nil
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = rel
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// Pack writes dir as a gzipped tar build context: .git and what
// dir/.dockerignore excludes are left out.
func Pack(dir string, w io.Writer) error {
	skip, err := ContextSkip(dir)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(w)
	if err := WriteTar(dir, zw, skip); err != nil {
		return err
	}
	return zw.Close()
}

// ContextSkip reads dir/.dockerignore (none: only .git is left out). A
// directory that matches is not descended into unless an exclusion
// pattern ("!path") might bring something inside it back, as Docker does.
func ContextSkip(dir string) (Skip, error) {
	var patterns []string
	f, err := os.Open(filepath.Join(dir, IgnoreFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		patterns, err = ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", IgnoreFile, err)
		}
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", IgnoreFile, err)
	}
	parents := map[string]patternmatcher.MatchInfo{}
	return func(rel string, isDir bool) (Decision, error) {
		if rel == ".git" && isDir {
			return Leave, nil
		}
		if len(patterns) == 0 {
			return Include, nil
		}
		parent := parents[path.Dir(rel)]
		m, info, err := pm.MatchesUsingParentResults(rel, parent)
		if err != nil {
			return Leave, fmt.Errorf("%s: %w", IgnoreFile, err)
		}
		if isDir {
			parents[rel] = info
		}
		switch {
		case !m:
			return Include, nil
		case isDir && mayBringBack(pm, rel):
			return Descend, nil
		}
		return Leave, nil
	}, nil
}

// mayBringBack reports whether an exclusion pattern ("!dir/file") may
// match inside the directory rel (Docker's rule for walking into an
// ignored directory).
func mayBringBack(pm *patternmatcher.PatternMatcher, rel string) bool {
	for _, p := range pm.Patterns() {
		if p.Exclusion() && strings.HasPrefix(p.String()+"/", rel+"/") {
			return true
		}
	}
	return false
}
