# Debian packages of the image tests (sourced by scripts/test.sh): buildah
# builds the images from the Dockerfile and runs commands in them (chroot
# isolation, no daemon); mmdebstrap makes the bookworm base image locally,
# since no registry can be reached; openssl makes the test CA and the HTTPS
# collector's certificate of test_binaries.py. Only when the image tests are on.
if [ "${TODO_IMAGE_TESTS:-}" = "1" ]; then
    ensure_packages buildah mmdebstrap openssl
fi
