package main

import (
	"runtime/debug"
	"strings"
)

// buildVersion is set at link time (make build passes
// -ldflags "-X main.buildVersion=…" from git describe).
var buildVersion string

// version returns the version this binary was built as: the one set at
// link time, else the module version or VCS revision Go recorded, else
// "dev".
func version() string {
	if buildVersion != "" {
		return buildVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	return "dev-" + strings.TrimSpace(rev[:min(12, len(rev))]) + dirty
}
