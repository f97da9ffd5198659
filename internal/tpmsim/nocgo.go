//go:build !cgo

package tpmsim

const cgoEnabled = false
