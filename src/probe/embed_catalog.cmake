# Writes OUT: a C++ file defining racker::probe::kBuiltinCatalog with the text of IN.
file(READ ${IN} text)
string(FIND "${text}" ")postroj_catalog\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${IN} contains the raw string delimiter")
endif()
file(WRITE ${OUT}.tmp
  "// generated from data/postroj/catalog.json by embed_catalog.cmake: do not edit\n"
  "namespace racker::probe {\n"
  "extern const char* const kBuiltinCatalog;\n"
  "const char* const kBuiltinCatalog = R\"postroj_catalog(${text})postroj_catalog\";\n"
  "}  // namespace racker::probe\n")
file(RENAME ${OUT}.tmp ${OUT})
