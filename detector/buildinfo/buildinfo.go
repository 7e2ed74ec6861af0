// Package buildinfo says which build of pgtripwire is running, for `pgtripwire version`
// and the pgtripwire_build_info metric.
package buildinfo

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Version is set at link time (-ldflags "-X .../buildinfo.Version=v1.2.3"); otherwise
// it is derived from the module and VCS information Go embeds.
var Version = ""

// String returns the version, the VCS revision when known, and the Go version.
func String() string {
	return VersionString() + " (" + runtime.Version() + ")"
}

// VersionString returns the version alone: the link-time one, else the module's,
// else the VCS revision, else "dev".
func VersionString() string {
	if Version != "" {
		return Version
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "dev-" + rev
}

// Register exports pgtripwire_build_info{version,goversion} = 1.
func Register(reg prometheus.Registerer) {
	promauto.With(reg).NewGauge(prometheus.GaugeOpts{
		Name:        "pgtripwire_build_info",
		Help:        "Always 1; labels say which build is running.",
		ConstLabels: prometheus.Labels{"version": VersionString(), "goversion": runtime.Version()},
	}).Set(1)
}
