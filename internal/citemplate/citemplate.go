// Package citemplate bakes the platform snapshot template the
// `@e2b/code-interpreter` SDK creates sandboxes from by default
// (codeinterp.TemplateName, "code-interpreter-v1"): it boots the
// code-interpreter image as a platform sandbox, waits until the server on
// port 49999 reports its default kernel warm (numpy, pandas and matplotlib
// imported, a figure rendered), freezes it with the ordinary snapshot
// template machinery and throws the sandbox away. A sandbox created from
// the template is restored with the server listening and the kernel
// ready: no boot, no kernel start, no imports from disk.
//
// The template is kept between starts: a state file in the data dir
// records the image version (its inputs hash) it was baked from, and a
// start with the same image reuses it. A new image replaces it, unless
// sandboxes still use the old one (then the old one stays and a warning
// says why).
//
// Both templates are the platform team's, so every team sees them: the
// image itself as a base template (ImageTemplate, a cold boot: what the
// benchmark compares against) and the snapshot.
package citemplate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/hearth-sandbox/hearth/internal/codeinterp"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
	"github.com/hearth-sandbox/hearth/internal/service"
	"github.com/hearth-sandbox/hearth/internal/store"
)

// ImageTemplate is the platform base template of the image (a cold boot).
const ImageTemplate = codeinterp.ImageName

// Shape of both templates: pandas and matplotlib want more than base's
// 512 MiB once a few DataFrames are around.
const (
	VCPUs    = 2
	MemoryMB = 1024
)

// Service is what baking needs from the control plane's use cases.
type Service interface {
	CreateSandbox(ctx context.Context, p service.Principal, in service.CreateSandboxInput) (store.Sandbox, error)
	DestroySandbox(ctx context.Context, p service.Principal, id string) error
	CreateSnapshot(ctx context.Context, p service.Principal, sandboxID, name string) (store.Template, error)
	DeleteSnapshot(ctx context.Context, p service.Principal, name string) error
}

// Store reads and records platform templates.
type Store interface {
	GetTemplateByTeam(ctx context.Context, teamID, idOrName string) (store.Template, error)
	UpsertPlatformTemplate(ctx context.Context, t store.Template) (store.Template, error)
	DeleteTemplate(ctx context.Context, teamID, id string) error
}

// stagingName is the template's name while it is baked: the snapshot use
// case reserves its name before the host has written a byte, and a
// sandbox created from code-interpreter-v1 in that window would fail.
// The row gets the real name once the snapshot exists.
const stagingName = codeinterp.TemplateName + "-baking"

var (
	_ Service = (*service.Service)(nil)
	_ Store   = (*store.DB)(nil)
)

// Options configure Ensure.
type Options struct {
	Service Service
	Store   Store
	// ImageVersion identifies the built image (its manifest's inputs hash).
	ImageVersion string
	// StateFile records what the current template was baked from.
	StateFile string
	// Ready returns nil once the sandbox's code interpreter answers
	// /health with 200 (its default kernel is warm).
	Ready func(ctx context.Context, sandboxID string) error
	// BakeTimeout bounds boot + kernel warm-up + snapshot (zero: 10 min).
	BakeTimeout time.Duration
	Logger      *slog.Logger
}

type state struct {
	ImageVersion string    `json:"image_version"`
	TemplateID   string    `json:"template_id"`
	BakedAt      time.Time `json:"baked_at"`
	BakeSeconds  float64   `json:"bake_seconds"`
}

// platform acts as the platform team, which owns both templates.
func platform() service.Principal { return service.Principal{TeamID: store.PlatformTeamID} }

// Ensure makes sure the platform templates exist and the snapshot is baked
// from the current image, baking it when needed.
func Ensure(ctx context.Context, o Options) error {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := o.Store.UpsertPlatformTemplate(ctx, store.Template{
		ID: ImageTemplate, Name: ImageTemplate, Kind: sandbox.KindBase, VCPUs: VCPUs, MemoryMB: MemoryMB,
	}); err != nil {
		return fmt.Errorf("platform template %s: %w", ImageTemplate, err)
	}
	// A bake that died half-way leaves its staging template behind.
	if err := o.Service.DeleteSnapshot(ctx, platform(), stagingName); err != nil && service.KindOf(err) != service.KindNotFound {
		log.Warn("code interpreter: remove a leftover staging template", "template", stagingName, "err", err)
	}
	var st state
	if b, err := os.ReadFile(o.StateFile); err == nil {
		_ = json.Unmarshal(b, &st) // unreadable: bake again
	}
	tpl, err := o.Store.GetTemplateByTeam(ctx, store.PlatformTeamID, codeinterp.TemplateName)
	switch {
	case err == nil && tpl.TeamID == store.PlatformTeamID && tpl.Kind == sandbox.KindSnapshot &&
		st.ImageVersion == o.ImageVersion && st.TemplateID == tpl.ID:
		log.Info("code interpreter: template is current, reusing it", "template", codeinterp.TemplateName,
			"template_id", tpl.ID, "image_version", o.ImageVersion, "baked_at", st.BakedAt)
		return nil
	case err == nil && tpl.TeamID == store.PlatformTeamID:
		log.Info("code interpreter: template is stale (image rebuilt), replacing it", "template", codeinterp.TemplateName,
			"template_id", tpl.ID, "image_version", o.ImageVersion, "was", st.ImageVersion)
		if err := o.Service.DeleteSnapshot(ctx, platform(), codeinterp.TemplateName); err != nil {
			return fmt.Errorf("replace %s: %w (the old template stays)", codeinterp.TemplateName, err)
		}
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("look up %s: %w", codeinterp.TemplateName, err)
	}
	return bake(ctx, o, log)
}

func bake(ctx context.Context, o Options, log *slog.Logger) error {
	timeout := o.BakeTimeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	log.Info("code interpreter: baking the template (boot the image, warm the kernel, snapshot)",
		"template", codeinterp.TemplateName, "image", ImageTemplate, "image_version", o.ImageVersion)
	vcpus, mem, timeoutS := VCPUs, MemoryMB, int(timeout/time.Second)+60
	sb, err := o.Service.CreateSandbox(ctx, platform(), service.CreateSandboxInput{
		Template: ImageTemplate, VCPUs: &vcpus, MemoryMB: &mem, TimeoutS: &timeoutS,
	})
	if err != nil {
		return fmt.Errorf("bake %s: boot %s: %w", codeinterp.TemplateName, ImageTemplate, err)
	}
	defer func() {
		if err := o.Service.DestroySandbox(context.WithoutCancel(ctx), platform(), sb.ID); err != nil {
			log.Warn("code interpreter: remove the baking sandbox", "sandbox_id", sb.ID, "err", err)
		}
	}()
	booted := time.Now()
	if err := o.Ready(ctx, sb.ID); err != nil {
		return fmt.Errorf("bake %s: the code interpreter in sandbox %s never got ready: %w", codeinterp.TemplateName, sb.ID, err)
	}
	warm := time.Now()
	staged, err := o.Service.CreateSnapshot(ctx, platform(), sb.ID, stagingName)
	if err != nil {
		return fmt.Errorf("bake %s: snapshot: %w", codeinterp.TemplateName, err)
	}
	// The host holds the files under the staged ID: the row is renamed by
	// replacing it with one of the same ID under the real name.
	if err := o.Store.DeleteTemplate(ctx, store.PlatformTeamID, staged.ID); err != nil {
		return fmt.Errorf("bake %s: rename the staged template: %w", codeinterp.TemplateName, err)
	}
	final := staged
	final.Name = codeinterp.TemplateName
	tpl, err := o.Store.UpsertPlatformTemplate(ctx, final)
	if err != nil {
		return fmt.Errorf("bake %s: rename the staged template %s: %w", codeinterp.TemplateName, staged.ID, err)
	}
	st := state{ImageVersion: o.ImageVersion, TemplateID: tpl.ID, BakedAt: time.Now().UTC(), BakeSeconds: time.Since(t0).Seconds()}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(o.StateFile, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("record %s: %w", o.StateFile, err)
	}
	log.Info("code interpreter: template ready", "template", codeinterp.TemplateName, "template_id", tpl.ID,
		"boot_s", booted.Sub(t0).Seconds(), "kernel_warm_s", warm.Sub(booted).Seconds(),
		"snapshot_s", time.Since(warm).Seconds())
	return nil
}
