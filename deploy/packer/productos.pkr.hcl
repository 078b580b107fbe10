# The instances' AMI: Amazon Linux 2023 with productos in /opt/productos/venv, deploy/productos.service, its
# log-file drop-in, logrotate and the CloudWatch agent. The service is installed, not enabled: User Data
# (deploy/user-data.sh) says where its settings are, then starts it.
#
#   pip wheel --no-deps -w dist .
#   packer init deploy/packer
#   packer build -var "wheel=$(ls dist/productos-*.whl)" -var "app_version=$(git rev-parse --short HEAD)" \
#     deploy/packer/productos.pkr.hcl
#
# The AMI id is in packer-manifest.json (and printed at the end). deploy/README.md goes on from there.

packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

variable "wheel" {
  type        = string
  description = "The productos wheel to install (pip wheel --no-deps -w dist .)."
}

variable "app_version" {
  type        = string
  description = "Names and tags the AMI: a git commit or a release."
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "instance_type" {
  type    = string
  default = "t3.small"
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Where the build instance runs (a subnet with a route to the Internet); empty: the default VPC."
}

data "amazon-ami" "al2023" {
  region      = var.region
  owners      = ["amazon"]
  most_recent = true
  filters = {
    name                = "al2023-ami-2023.*-x86_64"
    architecture        = "x86_64"
    virtualization-type = "hvm"
    root-device-type    = "ebs"
  }
}

locals {
  built = formatdate("YYYYMMDD-hhmmss", timestamp())
}

source "amazon-ebs" "productos" {
  region          = var.region
  source_ami      = data.amazon-ami.al2023.id
  instance_type   = var.instance_type
  subnet_id       = var.subnet_id
  ssh_username    = "ec2-user"
  ami_name        = "productos-${var.app_version}-${local.built}"
  ami_description = "productos ${var.app_version} on Amazon Linux 2023 (deploy/packer/productos.pkr.hcl)"
  encrypt_boot    = true
  # Instances from this AMI, and the build instance itself, speak IMDSv2 only.
  imds_support = "v2.0"
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  tags = {
    Name        = "productos-${var.app_version}"
    Application = "productos"
    Version     = var.app_version
  }
}

build {
  sources = ["source.amazon-ebs.productos"]

  provisioner "file" {
    sources     = [var.wheel, "${path.root}/../productos.service"]
    destination = "/tmp/"
  }

  provisioner "shell" {
    script           = "${path.root}/install.sh"
    execute_command  = "sudo env {{ .Vars }} bash '{{ .Path }}'"
    environment_vars = ["WHEEL=/tmp/${basename(var.wheel)}", "UNIT=/tmp/productos.service"]
  }

  post-processor "manifest" {
    output     = "packer-manifest.json"
    strip_path = true
  }
}
