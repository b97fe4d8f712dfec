package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hearth-sandbox/hearth/internal/store"
)

// BuildFilesTTL is how long an uploaded build context or COPY archive is
// kept after its upload (or the E2B SDK's last check that it is there). A
// build reads its files when it starts, so they are needed only between
// the upload and the start; a later build of the same files uploads them
// again.
const BuildFilesTTL = time.Hour

// ReclaimEvery is how often the control plane looks for files to reclaim.
const ReclaimEvery = time.Minute

// RunReclaimer reclaims every interval until ctx is done.
func (s *Service) RunReclaimer(ctx context.Context, every time.Duration) {
	runEvery(ctx, every, func() { s.ReclaimOnce(ctx) })
}

// ReclaimOnce removes what builds left that nothing needs any more: the
// files of superseded builds on their hosts (reclaimSuperseded) and
// uploaded build files older than BuildFilesTTL. It returns how many
// builds and files it reclaimed; failures are logged and retried at the
// next pass.
func (s *Service) ReclaimOnce(ctx context.Context) (builds, files int) {
	ready, err := s.store.ListBuildsByStatus(ctx, store.BuildStatusReady)
	if err != nil {
		s.log.WarnContext(ctx, "reclaim: list builds", "err", err)
	}
	// Only a template with two versions still on disk has one to reclaim.
	kept := map[string][]store.Build{}
	for _, b := range ready {
		if b.ReclaimedAt.IsZero() {
			kept[b.TemplateID] = append(kept[b.TemplateID], b)
		}
	}
	for _, bs := range kept {
		if len(bs) > 1 {
			builds += s.reclaimSuperseded(ctx, bs[0].TeamID, bs[0].TemplateID)
		}
	}
	return builds, s.reclaimBuildFiles(ctx)
}

// reclaimSuperseded removes, from every host holding them, the files of a
// template's ready builds that are no longer its current version and
// that no tag names (name:tag keeps its build). A host that refuses
// (sandboxes of that version still run or are paused there) keeps them
// until a later pass. It returns how many builds it reclaimed.
func (s *Service) reclaimSuperseded(ctx context.Context, teamID, templateID string) int {
	tpl, err := s.store.GetTemplateByTeam(ctx, teamID, templateID)
	if err != nil {
		return 0
	}
	bs, err := s.store.ListBuilds(ctx, tpl.ID)
	if err != nil {
		return 0
	}
	tags, err := s.store.ListTemplateTags(ctx, tpl.ID)
	if err != nil {
		return 0
	}
	tagged := map[string]bool{}
	for _, t := range tags {
		tagged[t.BuildID] = true
	}
	n := 0
	for _, b := range bs {
		if b.Status != store.BuildStatusReady || !b.ReclaimedAt.IsZero() || b.ID == tpl.ArtifactID || tagged[b.ID] || b.Host == "" {
			continue
		}
		clients, err := s.holderClients(ctx, b.Host, b.ID)
		if err != nil {
			s.log.InfoContext(ctx, "reclaim: a holder of a superseded build is unavailable; retried later", "build_id", b.ID, "err", err)
			continue
		}
		kept := false
		for _, hc := range clients {
			tb, ok := hc.(TemplateBuilder)
			if !ok {
				kept = true
				continue
			}
			if err := tb.DeleteBuild(ctx, b.ID); err != nil {
				kept = true
				s.log.InfoContext(ctx, "reclaim: superseded build kept for now", "build_id", b.ID, "template", tpl.Name, "err", err)
			}
		}
		if kept {
			continue
		}
		if err := s.store.MarkBuildReclaimed(ctx, b.ID); err != nil {
			s.log.WarnContext(ctx, "reclaim: record", "build_id", b.ID, "err", err)
			continue
		}
		n++
		s.log.InfoContext(ctx, "reclaimed a superseded build", "build_id", b.ID, "template", tpl.Name)
	}
	return n
}

// reclaimBuildFiles removes uploaded build files (and abandoned partial
// uploads) older than BuildFilesTTL.
func (s *Service) reclaimBuildFiles(ctx context.Context) int {
	if s.buildFilesDir == "" {
		return 0
	}
	entries, err := os.ReadDir(s.buildFilesDir)
	if err != nil {
		return 0
	}
	cutoff := s.now().Add(-BuildFilesTTL)
	n := 0
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || fi.ModTime().After(cutoff) {
			continue
		}
		if !validFilesHash(e.Name()) && !strings.HasPrefix(e.Name(), ".upload-") {
			continue
		}
		if err := os.Remove(filepath.Join(s.buildFilesDir, e.Name())); err != nil {
			s.log.WarnContext(ctx, "reclaim: build files", "file", e.Name(), "err", err)
			continue
		}
		n++
	}
	return n
}
