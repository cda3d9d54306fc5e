package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vramseal/vramseal/internal/testenv"
)

// The package's name, and where it puts the unit and the binary.
const (
	debPackage   = "vramseal-agent"
	installedSvc = "/usr/lib/systemd/system/vramseal-agent.service"
	installedBin = "/usr/bin/vramseal-agent"
)

// TestDebianPackage installs the .deb that `make test` builds (make deb:
// VRAMSEAL_DEB) with dpkg -i, checks the installed service with
// `systemd-analyze verify` and its `security --offline` score, the user,
// folders and configuration it set up, then purges it.
func TestDebianPackage(t *testing.T) {
	deb := testenv.Tool(t, "VRAMSEAL_DEB")
	testenv.Root(t, "installs a package with dpkg")
	dpkg := testenv.Program(t, "dpkg")
	sa := testenv.Program(t, "systemd-analyze")
	if _, err := os.Stat(deb); err != nil {
		t.Fatalf("%v: run `make deb`", err)
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", debPackage).Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Fatalf("%s is already installed on this machine (%s): not touching it (dpkg --purge %s, then rerun)", debPackage, out, debPackage)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(dpkg, "--purge", debPackage).CombinedOutput(); err != nil {
			t.Errorf("dpkg --purge: %v\n%s", err, out)
		}
		for _, p := range []string{installedBin, installedSvc, "/etc/vramseal/config.yml"} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s is still there after dpkg --purge", p)
			}
		}
	})
	run(dpkg, "-i", deb)

	if out := run(installedBin, "version"); !strings.Contains(out, "vramseal-agent") {
		t.Errorf("%s version: %s", installedBin, out)
	}
	// Offline: the machine's systemd need not run.
	if out := run(sa, "verify", "/usr/lib/systemd/system/vramseal-agent.socket", installedSvc); len(strings.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify on the installed unit:\n%s", out)
	}
	v := exposure(t, sa, installedSvc)
	if v > maxExposure {
		t.Errorf("installed unit: exposure %.1f, want at most %.1f", v, maxExposure)
	}
	t.Logf("installed unit: systemd-analyze verify clean, security --offline=true exposure %.1f", v)
	svc, err := os.ReadFile(installedSvc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(svc, []byte("ExecStart="+installedBin+" run")) {
		t.Errorf("the installed unit does not run %s", installedBin)
	}

	u, err := user.Lookup("vramseal")
	if err != nil {
		t.Fatalf("postinst made no vramseal user: %v", err)
	}
	g, err := user.LookupGroup("vramseal")
	if err != nil {
		t.Fatal(err)
	}
	gids, _ := u.GroupIds()
	if video, err := user.LookupGroup("video"); err != nil || !slices.Contains(gids, video.Gid) {
		t.Errorf("vramseal is not in the video group: %v (groups %v)", err, gids)
	}
	for p, want := range map[string]struct {
		mode os.FileMode
		uid  string
		gid  string
	}{
		"/etc/vramseal":            {0o750, "0", g.Gid},
		"/etc/vramseal/config.yml": {0o640, "0", g.Gid},
		"/var/lib/vramseal":        {0o700, u.Uid, g.Gid},
	} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != want.mode || itoa(st.Uid) != want.uid || itoa(st.Gid) != want.gid {
			t.Errorf("%s: mode %o owner %d:%d, want %o %s:%s", p, fi.Mode().Perm(), st.Uid, st.Gid, want.mode, want.uid, want.gid)
		}
	}
	// The installed example configuration loads as the agent would load it.
	data, err := os.ReadFile(filepath.Join("/etc/vramseal", "config.yml"))
	if err != nil {
		t.Fatal(err)
	}
	checkConfig(t, "/etc/vramseal/config.yml (installed)", data)
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
