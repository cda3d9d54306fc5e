// Command image builds vramseal-agent's OCI image layout without a container
// engine (`make image`, part of `make dist`).
//
// One image per platform (linux/amd64 and linux/arm64 from `make image`),
// under one image index. Two layers each: Debian packages unpacked from their .deb (-base, tars made by
// `dpkg-deb --fsys-tarfile`; for the cgo binary, libc6: the C library and the
// dynamic loader), then the agent at /usr/local/bin/vramseal-agent with the
// few files a container needs (/etc/passwd, /etc/group, /tmp). The config
// runs the agent as root (0:0), as the Helm chart's DaemonSet does: the seal
// secret is mounted with mode 0400, which Kubernetes gives to root only
// (docs/install.md). The image carries the org.opencontainers.image.*
// annotations (also as labels) and is tagged with its version in the
// layout's index (org.opencontainers.image.ref.name), never "latest".
// Every time stamp is -created (SOURCE_DATE_EPOCH), so a rebuild from the
// same inputs gives the same digests.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Where the agent lives in the image, and what it runs by default.
const (
	agentPath  = "/usr/local/bin/vramseal-agent"
	configPath = "/etc/vramseal/config.yml"
	metricPort = "9477/tcp"
	// imageUser is root: the chart's DaemonSet runs the agent as 0:0 so it
	// can read the 0400 seal secret; it drops every capability there.
	imageUser = "0:0"
	source    = "https://github.com/vramseal/vramseal"
)

// Annotation keys (OCI image spec, annotations.md).
const (
	annTitle         = "org.opencontainers.image.title"
	annDescription   = "org.opencontainers.image.description"
	annVersion       = "org.opencontainers.image.version"
	annRevision      = "org.opencontainers.image.revision"
	annCreated       = "org.opencontainers.image.created"
	annSource        = "org.opencontainers.image.source"
	annURL           = "org.opencontainers.image.url"
	annDocumentation = "org.opencontainers.image.documentation"
	annVendor        = "org.opencontainers.image.vendor"
	annRefName       = "org.opencontainers.image.ref.name"
	// annPackages names the Debian packages of the base layer.
	annPackages = "io.vramseal.image.debian-packages"
)

// options are the image's inputs.
type options struct {
	out       string // the OCI layout folder (replaced)
	platforms []platform
	packages  string // what the bases are, e.g. "libc6=2.36-9+deb12u14"
	version   string
	revision  string
	created   time.Time
}

// platform is one architecture's image: its binary and Debian packages.
type platform struct {
	arch   string   // GOARCH and Debian's name alike: amd64, arm64
	binary string   // the agent, built for arch
	bases  []string // tars of unpacked Debian packages for arch
}

// platformFlag parses -platform ARCH=BINARY,TAR[,TAR…].
type platformFlag []platform

func (l *platformFlag) String() string { return fmt.Sprint(*l) }
func (l *platformFlag) Set(v string) error {
	arch, rest, ok := strings.Cut(v, "=")
	files := strings.Split(rest, ",")
	if !ok || arch == "" || len(files) < 2 {
		return fmt.Errorf("%q: want ARCH=BINARY,TAR[,TAR…]", v)
	}
	*l = append(*l, platform{arch: arch, binary: files[0], bases: files[1:]})
	return nil
}

func main() {
	var o options
	var plats platformFlag
	flag.StringVar(&o.out, "out", "dist/vramseal-agent-image", "the OCI image layout folder to write (replaced)")
	flag.Var(&plats, "platform", "ARCH=BINARY,TAR[,TAR…]: the agent built for linux/ARCH and tars of unpacked Debian packages (dpkg-deb --fsys-tarfile) for ARCH; repeatable")
	flag.StringVar(&o.packages, "packages", "", "the Debian packages of the tars, as name=version")
	flag.StringVar(&o.version, "version", "", "the agent's version (the image's tag)")
	flag.StringVar(&o.revision, "revision", "", "the commit the agent was built from")
	flag.Parse()
	o.platforms = plats
	o.created = time.Unix(0, 0).UTC()
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			fmt.Fprintf(os.Stderr, "image: SOURCE_DATE_EPOCH %q: %v\n", s, err)
			os.Exit(2)
		}
		o.created = time.Unix(sec, 0).UTC()
	}
	idx, err := build(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
	d, _ := idx.Digest()
	fmt.Printf("%s: %s (tag %s)\n", o.out, d, o.version)
}

// build writes the layout: index.json names one image index, tagged with
// the version, that holds one image per platform. It returns that index.
func build(o options) (v1.ImageIndex, error) {
	if len(o.platforms) == 0 {
		return nil, errors.New("no -platform")
	}
	if o.version == "" || o.version == "latest" {
		return nil, fmt.Errorf("version %q: the image is tagged with the agent's version, never latest", o.version)
	}
	ann := map[string]string{
		annTitle:         "vramseal-agent",
		annDescription:   "Seals model shards in GPU memory and re-verifies them; audit events over OTLP, Prometheus metrics.",
		annVersion:       o.version,
		annRevision:      o.revision,
		annCreated:       o.created.Format(time.RFC3339),
		annSource:        source,
		annURL:           source,
		annDocumentation: source + "/blob/main/docs/install.md",
		annVendor:        "vramseal project",
		annPackages:      o.packages,
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range o.platforms {
		img, err := image(o, p, ann)
		if err != nil {
			return nil, fmt.Errorf("linux/%s: %w", p.arch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1, Platform: &v1.Platform{OS: "linux", Architecture: p.arch, Variant: variant(p.arch)},
		}})
	}
	idx = mutate.Annotations(idx, ann).(v1.ImageIndex)
	if err := os.RemoveAll(o.out); err != nil {
		return nil, err
	}
	lp, err := layout.Write(o.out, empty.Index)
	if err != nil {
		return nil, err
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{annRefName: o.version})); err != nil {
		return nil, err
	}
	return idx, nil
}

// image is one platform's image.
func image(o options, p platform, ann map[string]string) (v1.Image, error) {
	cfg := &v1.ConfigFile{
		Architecture: p.arch,
		Variant:      variant(p.arch),
		OS:           "linux",
		Created:      v1.Time{Time: o.created},
		Config: v1.Config{
			User:         imageUser,
			Entrypoint:   []string{agentPath},
			Cmd:          []string{"run", "--config.file=" + configPath},
			Env:          []string{"PATH=/usr/local/bin:/usr/bin:/bin", "CUDA_DEVICE_ORDER=PCI_BUS_ID"},
			ExposedPorts: map[string]struct{}{metricPort: {}},
			WorkingDir:   "/",
			Labels:       ann,
		},
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, err
	}
	var adds []mutate.Addendum
	for _, b := range p.bases {
		data, err := debianLayer(b, o.created)
		if err != nil {
			return nil, err
		}
		l, err := layer(data)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{Layer: l, MediaType: types.OCILayer, History: v1.History{
			Created: v1.Time{Time: o.created}, CreatedBy: "dpkg-deb --fsys-tarfile " + path.Base(b), Comment: "Debian packages: " + o.packages,
		}})
	}
	data, err := agentLayer(p.binary, o.created)
	if err != nil {
		return nil, err
	}
	l, err := layer(data)
	if err != nil {
		return nil, err
	}
	adds = append(adds, mutate.Addendum{Layer: l, MediaType: types.OCILayer, History: v1.History{
		Created: v1.Time{Time: o.created}, CreatedBy: "tools/image: " + agentPath + ", /etc/passwd, /etc/group, /tmp", Comment: "vramseal-agent " + o.version,
	}})
	if img, err = mutate.Append(img, adds...); err != nil {
		return nil, err
	}
	return mutate.Annotations(img, ann).(v1.Image), nil
}

// variant is the platform's variant: v8 for arm64, as registries expect.
func variant(arch string) string {
	if arch == "arm64" {
		return "v8"
	}
	return ""
}

// layer is an OCI (gzip) layer of an uncompressed tar held in memory.
func layer(data []byte) (v1.Layer, error) {
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// debianLayer rewrites a package's file tree (dpkg-deb --fsys-tarfile) as a
// layer: names without "./", owned by root, time stamps set to created.
func debianLayer(file string, created time.Time) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == "" {
			continue
		}
		if h.Typeflag == tar.TypeDir {
			name += "/"
		}
		if h.Typeflag == tar.TypeLink {
			h.Linkname = strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
		}
		nh := &tar.Header{Typeflag: h.Typeflag, Name: name, Linkname: h.Linkname, Size: h.Size, Mode: h.Mode,
			Uname: "root", Gname: "root", ModTime: created, Format: tar.FormatPAX}
		if err := tw.WriteHeader(nh); err != nil {
			return nil, err
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// passwd and group name root (the agent's user here) and nobody.
const (
	passwd = "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
	group  = "root:x:0:\nnobody:x:65534:\n"
)

// agentLayer holds the agent and the files a container expects.
func agentLayer(binary string, created time.Time) ([]byte, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		name string
		mode int64
		data []byte
	}{
		{"etc/", 0o755, nil},
		{"etc/passwd", 0o644, []byte(passwd)},
		{"etc/group", 0o644, []byte(group)},
		{"tmp/", 0o1777, nil},
		{"usr/", 0o755, nil},
		{"usr/local/", 0o755, nil},
		{"usr/local/bin/", 0o755, nil},
		{strings.TrimPrefix(agentPath, "/"), 0o755, bin},
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.data)), Uname: "root", Gname: "root", ModTime: created, Format: tar.FormatPAX}
		h.Typeflag = tar.TypeReg
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
