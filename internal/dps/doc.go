// Package dps holds the wire contract of the Azure IoT Hub Device Provisioning
// Service as dpsd speaks it: the JSON models of the device and service APIs,
// the identifier rules, and the date format. It has no behaviour beyond
// encoding and validation of single values, so every other package can share it.
package dps
