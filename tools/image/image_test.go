package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vramseal/vramseal/internal/testenv"
)

// fakeDebTar is what dpkg-deb --fsys-tarfile prints: "./" names.
func fakeDebTar(t *testing.T) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755},
		{Typeflag: tar.TypeDir, Name: "./lib/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "./lib/libc.so.6", Mode: 0o755, Size: 4, Uid: 1000, Uname: "builder"},
		{Typeflag: tar.TypeSymlink, Name: "./lib/ld.so", Linkname: "libc.so.6", Mode: 0o777},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("libc"))
		}
	}
	tw.Close()
	p := filepath.Join(t.TempDir(), "libc6.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func testOptions(t *testing.T, plats ...platform) options {
	return options{out: filepath.Join(t.TempDir(), "image"), platforms: plats,
		packages: "libc6=2.36-test", version: "1.2.3", revision: "abc123",
		created: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
}

// readLayout opens the layout as a registry client would: index.json names
// one image index (tagged), which names one image per platform.
func readLayout(t *testing.T, dir string) (v1.Descriptor, v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("%d entries in index.json, want 1 (the image index)", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if desc.MediaType != types.OCIImageIndex {
		t.Fatalf("index.json names a %s, want an OCI image index", desc.MediaType)
	}
	idx, err := top.ImageIndex(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	imgs := map[string]v1.Image{}
	for _, d := range m.Manifests {
		if d.MediaType != types.OCIManifestSchema1 || d.Platform == nil || d.Platform.OS != "linux" {
			t.Fatalf("image index entry %+v", d)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		imgs[d.Platform.Architecture] = img
	}
	return desc, idx, imgs
}

// files lists a layer's entries by name.
func files(t *testing.T, l v1.Layer) map[string]*tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h
	}
}

// TestImageLayout checks the layout's index, manifest, config and layers.
func TestImageLayout(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(bin, []byte("#!agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	base := fakeDebTar(t)
	o := testOptions(t, platform{arch: "amd64", binary: bin, bases: []string{base}}, platform{arch: "arm64", binary: bin, bases: []string{base}})
	built, err := build(o)
	if err != nil {
		t.Fatal(err)
	}
	desc, idx, imgs := readLayout(t, o.out)
	if desc.Annotations[annRefName] != "1.2.3" {
		t.Errorf("index.json entry %+v: want tag 1.2.3", desc)
	}
	d1, _ := built.Digest()
	if desc.Digest != d1 {
		t.Errorf("index names %s, built %s", desc.Digest, d1)
	}
	if im, _ := idx.IndexManifest(); im.Annotations[annVersion] != "1.2.3" {
		t.Errorf("image index annotations %v", im.Annotations)
	}
	if len(imgs) != 2 || imgs["amd64"] == nil || imgs["arm64"] == nil {
		t.Fatalf("platforms %v, want amd64 and arm64", imgs)
	}
	for arch, img := range imgs {
		t.Run(arch, func(t *testing.T) { checkImage(t, o, arch, img) })
	}

	// The same inputs give the same image.
	o2 := o
	o2.out = filepath.Join(t.TempDir(), "again")
	again, err := build(o2)
	if err != nil {
		t.Fatal(err)
	}
	if d2, _ := again.Digest(); d2 != d1 {
		t.Errorf("rebuild: digest %s, first %s", d2, d1)
	}
	// Never tagged latest.
	o2.version = "latest"
	if _, err := build(o2); err == nil {
		t.Error("an image tagged latest was built")
	}
}

// checkImage checks one platform's manifest, config and layers.
func checkImage(t *testing.T, o options, arch string, img v1.Image) {
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("config media type %s", m.Config.MediaType)
	}
	for _, k := range []string{annTitle, annDescription, annVersion, annRevision, annCreated, annSource, annDocumentation, annPackages} {
		if m.Annotations[k] == "" {
			t.Errorf("manifest lacks annotation %s", k)
		}
	}
	if m.Annotations[annVersion] != "1.2.3" || m.Annotations[annRevision] != "abc123" || m.Annotations[annCreated] != "2026-12-01T00:00:00Z" {
		t.Errorf("annotations %v", m.Annotations)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if c.User != "0:0" {
		t.Errorf("user %q: the chart runs the agent as root to read the 0400 secret", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{agentPath}) || !slices.Equal(c.Cmd, []string{"run", "--config.file=/etc/vramseal/config.yml"}) {
		t.Errorf("entrypoint %v cmd %v", c.Entrypoint, c.Cmd)
	}
	if !slices.Contains(c.Env, "CUDA_DEVICE_ORDER=PCI_BUS_ID") {
		t.Errorf("env %v", c.Env)
	}
	if _, ok := c.ExposedPorts["9477/tcp"]; !ok {
		t.Errorf("exposed ports %v", c.ExposedPorts)
	}
	for k, v := range m.Annotations {
		if c.Labels[k] != v {
			t.Errorf("label %s=%q, annotation %q", k, c.Labels[k], v)
		}
	}
	if cfg.Architecture != arch || cfg.OS != "linux" || !cfg.Created.Time.Equal(o.created) {
		t.Errorf("config %s/%s created %v", cfg.OS, cfg.Architecture, cfg.Created)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 2 || len(cfg.RootFS.DiffIDs) != 2 || len(cfg.History) != 2 {
		t.Fatalf("%d layers, %d diff ids, %d history entries: want 2 (Debian packages, the agent)", len(layers), len(cfg.RootFS.DiffIDs), len(cfg.History))
	}
	for i, l := range layers {
		mt, _ := l.MediaType()
		if mt != types.OCILayer {
			t.Errorf("layer %d: media type %s", i, mt)
		}
	}
	base := files(t, layers[0])
	if h := base["lib/libc.so.6"]; h == nil || h.Uid != 0 || h.Uname != "root" || !h.ModTime.Equal(o.created) {
		t.Errorf("base layer: lib/libc.so.6 %+v, want it root-owned at the build's time (entries %v)", h, base)
	}
	if h := base["lib/ld.so"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "libc.so.6" {
		t.Errorf("base layer: symlink lost: %+v", h)
	}
	for name := range base {
		if strings.HasPrefix(name, "./") || strings.HasPrefix(name, "/") {
			t.Errorf("base layer entry %q", name)
		}
	}
	top := files(t, layers[1])
	if h := top["usr/local/bin/vramseal-agent"]; h == nil || h.Mode != 0o755 || h.Size != 7 {
		t.Errorf("agent layer: %+v", h)
	}
	if h := top["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("agent layer: /tmp %+v", h)
	}
	for _, f := range []string{"etc/passwd", "etc/group"} {
		if top[f] == nil {
			t.Errorf("agent layer lacks %s", f)
		}
	}
	if !strings.HasPrefix(passwd, "root:x:0:0:") {
		t.Error("/etc/passwd does not name the image's user 0")
	}
}

// TestImageRunsTheAgent builds the image from the real inputs that `make
// test` exports (the agent binary, Debian's libc6 unpacked), checks that the
// binary's dynamic loader and every library it needs are in the image, and,
// as root, runs `vramseal-agent version` inside the image's file tree
// (chroot), so the image's C library is shown to be enough.
func TestImageRunsTheAgent(t *testing.T) {
	bin := testenv.Tool(t, "VRAMSEAL_AGENT_BIN")
	libc := testenv.Tool(t, "VRAMSEAL_LIBC6_TAR")
	o := testOptions(t, platform{arch: "amd64", binary: bin, bases: []string{libc}})
	if _, err := build(o); err != nil {
		t.Fatal(err)
	}
	_, _, imgs := readLayout(t, o.out)
	img := imgs["amd64"]
	root := t.TempDir()
	extract(t, img, root)

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	libs := checkLibraries(t, root, f, "x86_64-linux-gnu")
	t.Logf("%v found in the image", libs)

	testenv.Root(t, "runs the agent chrooted into the image's file tree")
	cmd := exec.Command(agentPath, "version")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "vramseal") {
		t.Fatalf("vramseal-agent version in the image: %v\n%s", err, out)
	}
	t.Logf("in the image: %s", strings.TrimSpace(string(out)))
}

// checkLibraries checks that the binary's dynamic loader and every library
// it needs are in the image's tree, and returns the libraries.
func checkLibraries(t *testing.T, root string, f *elf.File, triplet string) []string {
	t.Helper()
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, _ := io.ReadAll(p.Open())
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		t.Fatal("the agent binary has no dynamic loader: it is not the cgo build")
	}
	if !inTree(root, interp) {
		t.Errorf("the dynamic loader %s is not in the image", interp)
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	for _, lib := range libs {
		if !inTree(root, "/lib/"+triplet+"/"+lib) && !inTree(root, "/usr/lib/"+triplet+"/"+lib) {
			t.Errorf("%s (needed by the agent) is not in the image", lib)
		}
	}
	return append(libs, interp)
}

// TestImageRunsTheAgentArm64 is TestImageRunsTheAgent for linux/arm64,
// run by `make dist` (dist-smoke), which builds the arm64 binary with the
// cross compiler and exports these: the agent runs under qemu-user-static
// with the image's file tree as its root for libraries (-L), so the arm64
// image's C library is shown to be enough. `make test` does not build for
// arm64 and does not ask for it.
func TestImageRunsTheAgentArm64(t *testing.T) {
	bin := os.Getenv("VRAMSEAL_AGENT_BIN_ARM64")
	if bin == "" {
		t.Log("VRAMSEAL_AGENT_BIN_ARM64 not set: the arm64 image is checked by make dist")
		return
	}
	libc := testenv.Tool(t, "VRAMSEAL_LIBC6_TAR_ARM64")
	qemu := testenv.Tool(t, "VRAMSEAL_QEMU_ARM64")
	o := testOptions(t, platform{arch: "arm64", binary: bin, bases: []string{libc}})
	if _, err := build(o); err != nil {
		t.Fatal(err)
	}
	_, _, imgs := readLayout(t, o.out)
	root := t.TempDir()
	extract(t, imgs["arm64"], root)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != elf.EM_AARCH64 {
		t.Fatalf("%s is a %s binary", bin, f.Machine)
	}
	libs := checkLibraries(t, root, f, "aarch64-linux-gnu")
	out, err := exec.Command(qemu, "-L", root, filepath.Join(root, agentPath), "version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "linux/arm64") {
		t.Fatalf("vramseal-agent version under qemu with the image's libraries: %v\n%s", err, out)
	}
	t.Logf("arm64 image: %v found; under qemu: %s", libs, strings.SplitN(string(out), "\n", 2)[0])
}

// inTree reports whether name exists in the tree at root, following
// symbolic links inside the tree.
func inTree(root, name string) bool {
	p := name
	for range 16 {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			return false
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			return true
		}
		target, err := os.Readlink(filepath.Join(root, p))
		if err != nil {
			return false
		}
		if !path.IsAbs(target) {
			target = path.Join(path.Dir(p), target)
		}
		p = target
	}
	return false
}

// extract writes the image's flattened file tree under root.
func extract(t *testing.T, img v1.Image, root string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				var data []byte
				if data, err = io.ReadAll(tr); err == nil {
					err = os.WriteFile(p, data, os.FileMode(h.Mode).Perm())
				}
			}
		case tar.TypeSymlink:
			if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
				err = os.Symlink(h.Linkname, p)
			}
		case tar.TypeLink:
			err = os.Link(filepath.Join(root, filepath.Clean("/"+h.Linkname)), p)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
