# Golden CLI test of ds-sft (included by tests/cli/CMakeLists.txt); the base model comes from ds-pretrain.
if(TARGET ds-sft AND TARGET ds-pretrain AND TARGET ds-tokenize)
  add_test(NAME cli_ds_sft
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/ds_sft.sh $<TARGET_FILE:ds-sft> $<TARGET_FILE:ds-pretrain>
                   $<TARGET_FILE:ds-tokenize>)
  set_tests_properties(cli_ds_sft PROPERTIES ENVIRONMENT OMP_WAIT_POLICY=passive TIMEOUT 300)
endif()
