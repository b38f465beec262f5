# Both images from one build: `docker buildx bake release` (the release workflow) or `docker buildx bake` for local
# single-architecture images. The operator binary is compiled once per architecture and shared by both targets.
variable "VERSION" {
  default = "dev"
}
variable "REGISTRY" {
  default = "ghcr.io/appdb-dev"
}

group "default" {
  targets = ["operator", "vpn-gateway"]
}

group "release" {
  targets = ["operator-release", "vpn-gateway-release"]
}

target "operator" {
  dockerfile = "Dockerfile"
  target     = "operator"
  tags       = ["${REGISTRY}/appdb-operator:${VERSION}"]
}

target "vpn-gateway" {
  dockerfile = "Dockerfile"
  target     = "vpn-gateway"
  tags       = ["${REGISTRY}/appdb-vpn-gateway:${VERSION}"]
}

target "operator-release" {
  inherits  = ["operator"]
  platforms = ["linux/amd64", "linux/arm64"]
}

target "vpn-gateway-release" {
  inherits  = ["vpn-gateway"]
  platforms = ["linux/amd64", "linux/arm64"]
}
