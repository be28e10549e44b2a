#!/usr/bin/env bash
# Fetches a Kafka broker (kafka_2.13 and its runtime jars, from Maven Central via scripts/kafka/pom.xml)
# into .tools/kafka/libs, once: a second run only checks the stamp. Needs java (17+) and mvn.
# Measured: ~60 s on a machine with an empty ~/.m2; then nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=.tools/kafka
stamp="$dest/libs/.stamp"
want="$(sha256sum scripts/kafka/pom.xml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then
  echo "ferry: installing ${need[*]} (for the Kafka broker)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
echo "ferry: fetching the Kafka broker's jars into $dest/libs"
rm -rf "$dest/libs.tmp"
mvn -B -q -f scripts/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$PWD/$dest/libs.tmp"
rm -rf "$dest/libs"
mv "$dest/libs.tmp" "$dest/libs"
echo "$want" >"$stamp"
