#!/bin/bash
# EC2 User Data of the launch template in deploy/cloudformation.yaml. deploy/cloudformation.py puts this script
# there after a few lines that set, from the stack:
#   AWS_REGION, SERVICE_NAME, SSM_PATH (/<ServiceName>/), SECRET_ID (the service's row-only login, a secret the
#   stack generates), MIGRATE_SECRET_ID (the RDS master user's secret: the schema owner, for `productos migrate`),
#   METRICS_NAMESPACE, LOG_GROUP (the CloudWatch Logs group of the service's log).
# The AMI (deploy/packer/) holds productos in /opt/productos/venv, deploy/productos.service with its log-file
# drop-in, and the CloudWatch agent; the service is installed but not enabled, so that it never starts
# before this script has said where its settings are.
#
# No secret and no .env are written: the service reads SSM Parameter Store and Secrets Manager itself, in
# each worker, and follows a rotated password without a restart. `productos migrate` (the unit's ExecStartPre)
# logs in as the schema owner with the second secret, and `productos serve` as the service's row-only login with
# the first: the service itself cannot change the schema. To change a setting, change the parameter and run an
# instance refresh (deploy/README.md).
#
# (cfn-lint reads a dollar and a brace as a CloudFormation variable: this script writes $NAME, never braced.)
set -euo pipefail

# set -u stops here, naming the variable, if the lines before this script did not set one.
: "$AWS_REGION" "$SERVICE_NAME" "$SSM_PATH" "$SECRET_ID" "$MIGRATE_SECRET_ID" "$METRICS_NAMESPACE" "$LOG_GROUP"

# A scratch directory instead of / for a dry run: the tests run this script there.
root=$(printenv USER_DATA_ROOT || true)
dropins=$root/etc/systemd/system/productos.service.d
agent=$root/opt/aws/amazon-cloudwatch-agent

# Where the service's settings are: read by both `productos migrate` (ExecStartPre) and `productos serve`.
install -d -m 0755 "$dropins"
cat > "$dropins/10-settings.conf" <<EOF
# Written by User Data (deploy/user-data.sh). No secret here: only where the settings are.
[Service]
Environment=AWS_REGION=$AWS_REGION
Environment=PRODUCTOS_SERVICE_NAME=$SERVICE_NAME
Environment=PRODUCTOS_SSM_PATH=$SSM_PATH
Environment="PRODUCTOS_SECRET_ID=$SECRET_ID"
Environment="PRODUCTOS_MIGRATE_SECRET_ID=$MIGRATE_SECRET_ID"
Environment=PRODUCTOS_METRICS_PUBLISHER=cloudwatch
Environment=PRODUCTOS_CLOUDWATCH_NAMESPACE=$METRICS_NAMESPACE
EOF
chmod 0644 "$dropins/10-settings.conf"

# The CloudWatch agent ships the service's JSON log lines, one stream per instance.
install -d -m 0755 "$agent/etc"
cat > "$agent/etc/productos.json" <<EOF
{
  "agent": {"region": "$AWS_REGION"},
  "logs": {
    "logs_collected": {
      "files": {
        "collect_list": [
          {
            "file_path": "/var/log/productos/productos.log",
            "log_group_name": "$LOG_GROUP",
            "log_stream_name": "{instance_id}",
            "timezone": "UTC"
          }
        ]
      }
    }
  }
}
EOF
"$agent/bin/amazon-cloudwatch-agent-ctl" -a fetch-config -m ec2 -s -c "file:$agent/etc/productos.json"

systemctl daemon-reload
systemctl enable --now productos
