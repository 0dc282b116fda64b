# The catalog image: opm serving the file-based catalog beside this file. Without a
# pre-built cache (opm builds it when it starts), so two builds give the same image.
FROM quay.io/operator-framework/opm:v1.73.0
ENTRYPOINT ["/bin/opm"]
CMD ["serve", "/configs"]
ADD tusk-operator /configs/tusk-operator
LABEL operators.operatorframework.io.index.configs.v1=/configs
