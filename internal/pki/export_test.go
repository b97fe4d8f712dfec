package pki

import "time"

// SetClock makes ca issue certificates as if it were t.
func (ca *CA) SetClock(t time.Time) { ca.now = func() time.Time { return t } }
