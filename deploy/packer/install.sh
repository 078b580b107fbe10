#!/bin/bash
# Run as root by deploy/packer/productos.pkr.hcl on the build instance (Amazon Linux 2023):
#   WHEEL  the productos wheel uploaded by Packer
#   UNIT   deploy/productos.service, uploaded by Packer
# It installs productos and what runs beside it; it starts nothing and writes no setting (User Data does).
set -euo pipefail
: "$WHEEL" "$UNIT"

dnf -y upgrade --refresh
dnf -y install python3.11 python3.11-pip amazon-cloudwatch-agent logrotate

# The service's user and directories (the unit: User=productos, WorkingDirectory, ReadWritePaths).
id productos >/dev/null 2>&1 ||
  useradd --system --home-dir /opt/productos --no-create-home --shell /sbin/nologin productos
install -d -m 0755 -o root -g root /opt/productos
install -d -m 0750 -o productos -g productos /opt/productos/data
install -d -m 0750 -o productos -g productos /var/log/productos

python3.11 -m venv /opt/productos/venv
/opt/productos/venv/bin/pip install --no-cache-dir --upgrade pip
/opt/productos/venv/bin/pip install --no-cache-dir "$WHEEL"
/opt/productos/venv/bin/productos --help >/dev/null

install -m 0644 "$UNIT" /etc/systemd/system/productos.service
install -d -m 0755 /etc/systemd/system/productos.service.d
cat > /etc/systemd/system/productos.service.d/00-ami.conf <<'EOF'
# From the AMI (deploy/packer/install.sh).
[Unit]
# Never start without knowing where the settings are: with none, productos would serve an empty SQLite file
# and pass the ALB's health check. User Data writes this file, then starts the service.
ConditionPathExists=/etc/systemd/system/productos.service.d/10-settings.conf

[Service]
# The JSON log lines go to a file that the CloudWatch agent ships (journalctl -u productos shows systemd's own).
StandardOutput=append:/var/log/productos/productos.log
StandardError=append:/var/log/productos/productos.log
EOF

cat > /etc/logrotate.d/productos <<'EOF'
/var/log/productos/*.log {
    daily
    rotate 7
    compress
    delaycompress
    missingok
    notifempty
    copytruncate
}
EOF

# Installed, not enabled: User Data enables and starts it once the settings drop-in is written.
systemctl daemon-reload
rm -f "$WHEEL" "$UNIT"
dnf clean all
