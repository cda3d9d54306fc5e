module github.com/vramseal/vramseal/tools/image

go 1.26.7

replace github.com/vramseal/vramseal => ../..

require (
	github.com/google/go-containerregistry v0.22.1
	github.com/vramseal/vramseal v0.0.0-00010101000000-000000000000
)

require (
	github.com/klauspost/compress v1.20.1 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
