// Package deploy holds what Spool needs to run outside this repository's
// local stack: the container image recipe (docker/), the ElasticMQ
// configuration the docker-compose stack uses (elasticmq/), example ECS task
// and service definitions and CloudWatch alarms (ecs/), a Grafana dashboard
// (grafana/) and Prometheus alerting rules (prometheus/) on the services'
// metrics, the container health probe (cmd/probe), and the command that
// writes secrets an ECS task injects as variables to files (cmd/secretfiles). Its tests load the
// repository's docker-compose.yml and the ECS files and check that they fit
// together, since no Docker engine is needed to catch a wrong port, host
// name or path; and they check every metric the dashboard and the alarms
// name against the metrics the services' own definitions export.
package deploy
